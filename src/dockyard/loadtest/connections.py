"""Raw HTTP/1.1 keep-alive connections carrying the load, and the tally of what became of each
request.

httpx's ``AsyncClient`` generates about 200 requests a second on one core here, a tenth of what one
Dockyard worker answers; so the load goes out as pre-encoded request bytes on asyncio protocols,
and answers are parsed by httptools (uvicorn's parser, installed with the server). A connection
carries one request at a time (no pipelining), as a browser or an HTTP client library does.

Every request ends exactly once in the ``Tally``: answered 2xx (its latency kept), or an error of
one kind (an HTTP status, a timeout, a refused connection, a connection closed under it, a send
dropped because the in-flight cap was reached), so ``ok + errors == sent`` always holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import cycle
from typing import cast

import httptools

from dockyard.loadtest.target import Target

TIMEOUT = "timeout"
CONNECT_FAILED = "connect failed"
CONNECTION_CLOSED = "connection closed"
BAD_RESPONSE = "bad response"
DROPPED = "dropped (in-flight cap)"
LATE = "late (generator behind schedule)"
UNFINISHED = "unfinished"


class Tally:
    """What became of the requests of one stage."""

    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        """Seconds from each successful request's scheduled send time to its answer."""
        self.lags: list[float] = []
        """Seconds each request went out after its scheduled time (the generator's own lateness)."""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def success(self, latency: float) -> None:
        self.ok += 1
        self.latencies.append(latency)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


def encode_requests(target: Target, bodies: list[bytes]) -> list[bytes]:
    """Each body as the full bytes of a ``POST`` to the model's infer path."""
    auth = "".join(f"{name}: {value}\r\n" for name, value in target.headers().items())
    requests = []
    for body in bodies:
        head = (
            f"POST {target.infer_path()} HTTP/1.1\r\nHost: {target.authority}\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode("latin-1") + body)
    return requests


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``scheduled`` is when its current request was due."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled = 0.0
        self.deadline = 0.0
        self.is_busy = False
        self.is_open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.is_open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.pool.finish(self, BAD_RESPONSE)
            self.abort()

    def on_message_complete(self) -> None:
        self.pool.answered(self, self.parser.get_status_code(), self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        self.pool.lost(self)

    def send(self, request: bytes, scheduled: float, deadline: float) -> None:
        assert self.transport is not None
        self.is_busy = True
        self.scheduled = scheduled
        self.deadline = deadline
        self.transport.write(request)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """The connections of one stage: at most ``limit`` open (the cap on requests in flight), each
    request failed after ``timeout_s``. ``on_free`` is given each connection that finished its
    request and stays open (the closed loop sends the next one on it), ``on_lost`` called when a
    connection closes (the closed loop opens another)."""

    def __init__(
        self,
        target: Target,
        requests: list[bytes],
        *,
        limit: int,
        timeout_s: float,
        tally: Tally,
        on_free: Callable[[Connection], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.target = target
        self.requests = cycle(requests)
        self.limit = limit
        self.timeout_s = timeout_s
        self.tally = tally
        self.on_free = on_free
        self.on_lost = on_lost
        self.is_closed = False
        self.idle: deque[Connection] = deque()
        self.busy: set[Connection] = set()
        self.opening = 0
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Requests sent or waiting for their connection, not yet ended."""
        return len(self.busy) + self.opening

    @property
    def is_full(self) -> bool:
        return not self.idle and self.in_flight >= self.limit

    def send(self, connection: Connection, scheduled: float) -> None:
        now = time.monotonic()
        self.tally.lags.append(max(0.0, now - scheduled))
        self.busy.add(connection)
        connection.send(next(self.requests), scheduled, scheduled + self.timeout_s)

    def dispatch(self, scheduled: float) -> None:
        """Send a request due at ``scheduled``: on an idle connection, else on a new one, else
        (``limit`` in flight) drop it as an error: never a queue inside the generator."""
        if self.idle:
            self.send(self.idle.popleft(), scheduled)
        elif self.in_flight < self.limit:
            self.opening += 1
            task = self.loop.create_task(self._open_and_send(scheduled))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.tally.error(DROPPED)

    async def _open_and_send(self, scheduled: float) -> None:
        try:
            connection = await self.open()
        except asyncio.CancelledError:  # the stage closed while this connection was opening
            self.opening -= 1
            self.tally.error(UNFINISHED)
            raise
        self.opening -= 1
        if connection is None:
            self.tally.error(CONNECT_FAILED)
        elif time.monotonic() >= scheduled + self.timeout_s:
            self.tally.error(TIMEOUT)
            self.idle.append(connection)
        else:
            self.send(connection, scheduled)

    async def open(self) -> Connection | None:
        """A new connection, or None when it cannot be made within the timeout."""
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Connection(self),
                    self.target.host,
                    self.target.port,
                    ssl=self.target.ssl_context,
                ),
                self.timeout_s,
            )
        except (OSError, TimeoutError):
            return None
        return protocol

    def finish(self, connection: Connection, error: str | None) -> bool:
        """End the connection's current request (``error`` None: a success); False when it had
        none (ended already by a timeout)."""
        if not connection.is_busy:
            return False
        connection.is_busy = False
        self.busy.discard(connection)
        if error is None:
            self.tally.success(time.monotonic() - connection.scheduled)
        else:
            self.tally.error(error)
        return True

    def answered(self, connection: Connection, status: int, keep_alive: bool) -> None:
        if not self.finish(connection, None if 200 <= status < 300 else f"HTTP {status}"):
            return
        if not keep_alive:
            connection.abort()  # lost() forgets it
        elif self.on_free is not None:
            self.on_free(connection)
        else:
            self.idle.append(connection)

    def lost(self, connection: Connection) -> None:
        self.finish(connection, CONNECTION_CLOSED)
        if connection in self.idle:
            self.idle.remove(connection)
        if self.on_lost is not None and not self.is_closed:
            self.on_lost()

    def sweep(self, now: float) -> None:
        """Fail every request past its deadline and close its connection."""
        for connection in [c for c in self.busy if c.deadline <= now]:
            self.finish(connection, TIMEOUT)
            connection.abort()

    async def drain(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for the requests in flight, sweeping timeouts meanwhile."""
        deadline = time.monotonic() + wait_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            self.sweep(time.monotonic())

    async def close(self) -> None:
        """Close every connection; a request still in flight ends as ``unfinished``."""
        self.is_closed = True
        for connection in list(self.busy):
            self.finish(connection, UNFINISHED)
            connection.abort()
        for connection in self.idle:
            connection.abort()
        self.idle.clear()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
