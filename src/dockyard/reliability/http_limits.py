"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol with a cap on the request
head (431 and close), deadlines on slow heads and bodies (408 and close), and a cap on the
connections one worker holds (503 and close).

The head is measured when it is complete, and counted chunk by chunk while it is not (httptools
buffers a partial header itself), so an endless header is cut off at ``max_header_bytes`` plus at
most one read. Deadlines cost no timer per request: one sweep per event loop, once a second while
connections are open, closes the ones that are late.

The connection cap is checked once per connection, when it is made: a connection past it is
answered 503 at the end of its first request head (a client reads an answer to what it sent, not a
reset) and closed; one that sends nothing is closed at the first sweep after a second.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dockyard.config import Settings

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
TURN_AWAY_GRACE_S = 1.0
"""How long a connection past the cap may take to send the head its 503 answers."""
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class HttpLimits:
    """How large a request head may be and how slowly a request may arrive."""

    max_header_bytes: int = 64 * 1024
    """Request line plus header fields, in bytes."""
    max_headers: int = 100
    header_timeout_s: float = 10.0
    """From a request's first byte (or a new connection) to the end of its head."""
    body_timeout_s: float = 30.0
    """Longest pause between two chunks of a request body."""
    max_connections: int = 1000
    """Connections one worker holds at once; past it new ones are answered 503 and closed."""

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
        )


@dataclass(slots=True)
class Watch:
    """One connection's own state: what the head and the sweep need to know."""

    head_bytes: int = 0
    """Bytes of the chunks that arrived wholly inside the current head (a partial header); not 0
    once a head must be measured exactly (it came in pieces, or in one large chunk)."""
    moved: bool = False
    """Whether bytes arrived since the last sweep."""
    deadline: float | None = None
    """When the wait the sweep last saw becomes late (None: no wait seen yet)."""
    head: object = None
    """The scope of the request whose head the sweep saw arriving last."""


class Refusal(Exception):
    """Raised in a parser callback to stop parsing and answer ``status`` (the message) and close."""

    status: ClassVar[int] = 400
    headers: ClassVar[bytes] = b""


class HeadTooLarge(Refusal):
    """A head over the limits."""

    status = 431


class OverCapacity(Refusal):
    """A request on a connection past ``max_connections``."""

    status = 503
    headers = b"retry-after: %d\r\n" % RETRY_AFTER_S


class TurnedAway:
    """The parser callbacks of a connection past the cap: its first complete head is refused."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def on_headers_complete(self) -> None:
        raise OverCapacity(self.message)


class LimitedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses oversized heads, times out slow requests, and turns away
    connections past ``max_connections``.

    Use ``limited_protocol(limits)`` for a class with other limits than the defaults. Keep-alive,
    pipelining and flow control are uvicorn's; a request waiting on the server (reading paused,
    ``Expect: 100-continue`` not answered yet) is never timed out.

    The usual head, small and in one chunk, costs two comparisons when it is complete, and each
    chunk a store and two: no callback per header, no clock read. Only a head that arrived
    in pieces, or in one large chunk, is measured exactly. Where a connection stands is read from
    uvicorn's own state: no request yet (no scope), a head still arriving (a scope without a
    method, which uvicorn sets once the head is complete), or a head complete.

    Its own state is one attribute, ``_watch``: past 29 instance attributes (uvicorn's protocol
    has 28) CPython stops sharing the instances' attribute keys, and every attribute access in
    the protocol gets slower.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    closing: ClassVar[bool] = False
    """Set when this process drains (``close_gently``): every response says
    ``Connection: close``."""
    _max_header_bytes: ClassVar[int] = limits.max_header_bytes
    _max_headers: ClassVar[int] = limits.max_headers
    _max_connections: ClassVar[int] = limits.max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = Watch()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _sweeper(self.loop).add(self)
        if len(self.connections) > self._max_connections:
            self._turn_away()

    def _turn_away(self) -> None:
        """Leave the connection out of the worker's count, and answer its first head 503.

        Its parser gets callbacks of its own, so the admitted connections' path has no check.
        """
        self.connections.discard(self)
        message = (
            f"this worker already holds its maximum of {self._max_connections} connections "
            "(setting max_connections); retry shortly"
        )
        self.parser = httptools.HttpRequestParser(TurnedAway(message))
        self._watch.deadline = self.loop.time() + TURN_AWAY_GRACE_S

    def connection_lost(self, exc: Exception | None) -> None:
        _sweeper(self.loop).connections.discard(self)
        super().connection_lost(exc)

    def _in_head(self) -> bool:
        """Whether a request's head has begun to arrive and is not complete."""
        return self.scope is not None and "method" not in self.scope

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received (which would answer a refused head with a 400), plus the count
        # of a head that spans chunks.
        self._unset_keepalive_if_required()
        watch = self._watch
        watch.moved = True
        if len(data) > self._max_header_bytes and not watch.head_bytes:
            watch.head_bytes = 1  # a head completed in this chunk is measured exactly
        scope = self.scope
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, Refusal):
                self.refuse(refusal.status, str(refusal), in_head=True, headers=refusal.headers)
            else:
                self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.scope is not None and "method" not in self.scope:  # still inside a head
            if self.scope is not scope:
                watch.head_bytes = 1  # the head began in this chunk: split, nothing counted
            else:
                watch.head_bytes += len(data)
                if watch.head_bytes > self._max_header_bytes:
                    self.refuse(431, self._too_large(), in_head=True)

    def _invalid(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def on_headers_complete(self) -> None:
        if self._watch.head_bytes or len(self.headers) > self._max_headers:
            self._check_head()
            self._watch.head_bytes = 0
        HttpToolsProtocol.on_headers_complete(self)
        if self.closing:
            self.cycle.keep_alive = False

    def _check_head(self) -> None:
        """Raise HeadTooLarge (431) if the complete head is over a limit."""
        if len(self.headers) > self._max_headers:
            raise HeadTooLarge(f"more than {self._max_headers} header fields (setting max_headers)")
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self._max_header_bytes:
            raise HeadTooLarge(self._too_large())

    def _too_large(self) -> str:
        return (
            f"request line and headers are over {self._max_header_bytes} bytes "
            "(setting max_header_bytes)"
        )

    def check_deadline(self, now: float) -> None:
        """408 and close for a head or body that is late, close for a new connection that never
        sent a byte (what the sweep asks once a second). A deadline runs from the sweep that
        first saw the wait, so it is met within its timeout plus up to one sweep interval."""
        watch = self._watch
        moved, watch.moved = watch.moved, False
        if self.scope is None:
            if watch.deadline is None:
                watch.deadline = now + self.limits.header_timeout_s
            elif now >= watch.deadline:
                self.transport.close()
            return
        if self._in_head():
            if watch.head is not self.scope or self.flow.read_paused:
                watch.head = self.scope
                watch.deadline = now + self.limits.header_timeout_s
            elif watch.deadline is not None and now >= watch.deadline:
                message = self._late("request line and headers", "header_timeout_s")
                self.refuse(408, message, in_head=True)
            return
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            watch.deadline = None
            return
        if moved or self.flow.read_paused or cycle.waiting_for_100_continue:
            watch.deadline = now + self.limits.body_timeout_s
        elif watch.deadline is not None and now >= watch.deadline:
            self.refuse(408, self._late("request body", "body_timeout_s"), in_head=False)

    def _late(self, what: str, setting: str) -> str:
        limit = getattr(self.limits, setting)
        return f"the {what} did not arrive in time ({limit:g} s, setting {setting})"

    def refuse(self, status: int, message: str, *, in_head: bool, headers: bytes = b"") -> None:
        """Answer ``status`` with ``{"error": message}`` when the connection is free to, and close.

        A refused head never reaches the app. A request whose body is late has the app waiting on
        it: it is told the client left, and whatever it answers is dropped.
        """
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if in_head:
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
        logger.info("refused a request from %s: %d %s", self.client, status, message)
        if can_answer and not self.pipeline:
            self.transport.write(_answer(status, message, headers))
        self.transport.close()


def _answer(status: int, message: str, headers: bytes = b"") -> bytes:
    body = json.dumps({"error": message}).encode()
    phrase = http.HTTPStatus(status).phrase.encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"%sconnection: close\r\n\r\n%s" % (status, phrase, len(body), headers, body)
    )


def close_gently(connections: Iterable[Any]) -> None:
    """Drain this process's connections without a reset: from now on every response says
    ``Connection: close`` (the one in progress too), and its connection closes once it is sent,
    so a keep-alive client reconnects, to another worker, instead of meeting a closed socket."""
    LimitedHttpProtocol.closing = True
    for connection in connections:
        cycle = connection.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """A ``LimitedHttpProtocol`` class with these limits, for ``uvicorn.Config(http=…)``."""
    namespace = {
        "limits": limits,
        "_max_header_bytes": limits.max_header_bytes,
        "_max_headers": limits.max_headers,
        "_max_connections": limits.max_connections,
    }
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), namespace)


class _Sweeper:
    """Checks the deadlines of one event loop's connections every second while there are any."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[LimitedHttpProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: LimitedHttpProtocol) -> None:
        self.connections.add(connection)
        if self._timer is None:
            self._timer = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        for connection in list(self.connections):
            connection.check_deadline(now)
        if self.connections:
            self._timer = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _SWEEPERS[loop] = _Sweeper(loop)
    return sweeper
