"""HTTP/1.1 load generators on raw keep-alive connections: open loop (a schedule) and closed loop.

Open loop: request ``i`` is due at ``t0 + i / rate`` whatever the server does. A due request goes
out on an idle connection, or waits in a backlog for the next connection that frees up; its latency
runs from its scheduled time, so a slow server cannot hide its queueing. The loop wakes at most
every millisecond (an asyncio timer's resolution) and sends what is due within the next
millisecond; a request sent that early counts from when it was sent, never from its later schedule.
Closed loop: each connection sends its next request as soon as the last one is answered.
An answer with ``Connection: close`` (a draining server) closes its connection, and a new one
takes its place. ``timeline_bin_s`` (closed loop) also reads each answer's ``model_version`` and
returns how many requests ended in each interval, by status and version (``_timeline``).

Request bytes are encoded once; responses are parsed with httptools. Run as a script it prints one
JSON object: ``python benchmarks/loadgen.py open --port P --path /v2/... --body FILE --rate R``.
Every request carries ``Authorization: $BENCH_AUTH`` when that variable is set (Dockyard's API key,
kept off the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

import httptools
import numpy as np
import uvloop

HOST = "127.0.0.1"
TICK_S = 0.001
DRAIN_S = 2.0
START_DELAY_S = 0.02
SUBPROCESS_SLACK_S = 30.0
AUTH_ENV = "BENCH_AUTH"
VERSION = re.compile(rb'"model_version":\s*"([^"]*)"')


def encode_request(port: int, path: str, body: bytes, authorization: str | None = None) -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.started = 0.0
        self.is_busy = False
        self.is_open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.is_open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        self.run.lost(self)

    def on_message_complete(self) -> None:
        self.is_busy = False
        self.run.done(self, self.parser.get_status_code(), self.started)

    def answered(self) -> str:
        """What ``_Run.done`` records of the answer beyond its status (nothing here)."""
        return ""

    def send(self, request: bytes, started: float) -> None:
        assert self.transport is not None
        self.is_busy = True
        self.started = started
        self.transport.write(request)


class _TracedConnection(_Connection):
    """A connection that also reads the ``model_version`` of each answer (``_Run.timeline``)."""

    def __init__(self, run: _Run) -> None:
        super().__init__(run)
        self.body = bytearray()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def answered(self) -> str:
        found = VERSION.search(self.body)
        version = found.group(1).decode("ascii", "replace") if found else ""
        self.body.clear()  # after the match is read: it points into this buffer
        return version


class _Run:
    """The shared state of one run: connections, backlog, latencies and error counts."""

    def __init__(
        self, port: int, request: bytes, connections: int, *, is_open: bool, traced: bool = False
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.request = request
        self.connections = connections
        self.is_open_loop = is_open
        self.is_running = True
        self.idle: deque[_Connection] = deque()
        self.backlog: deque[float] = deque()
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        """The status of each answered request, in the order of ``latencies``."""
        self.lags: list[float] = []
        """Open loop: how late the generator itself sent requests that found a free connection."""
        self.ok = 0
        self.errors = 0
        self.in_flight = 0
        self.reconnects_left = 10 * connections
        self.first_start = 0.0
        self.last_done = 0.0
        self.timeline: list[tuple[float, int, str]] | None = [] if traced else None
        """Traced runs: (when, status or 0 for a transport failure, model_version) per request."""
        self.protocol = _TracedConnection if traced else _Connection

    async def connect(self) -> None:
        for _ in range(self.connections):
            await self._open_one()

    async def _open_one(self) -> None:
        try:
            _, protocol = await self.loop.create_connection(
                lambda: self.protocol(self), HOST, self.port
            )
        except OSError:
            self.errors += 1
            self._trace(0, "")
            return
        self.next_for(protocol)

    def send(self, connection: _Connection, started: float) -> None:
        self.in_flight += 1
        connection.send(self.request, started)

    def done(self, connection: _Connection, status: int, started: float) -> None:
        now = time.monotonic()
        self.in_flight -= 1
        self.last_done = now
        self.latencies.append(now - started)
        self.statuses.append(status)
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.errors += 1
        if self.timeline is not None:
            self.timeline.append((now, status, connection.answered()))
        if not connection.parser.should_keep_alive():
            assert connection.transport is not None
            connection.transport.close()  # lost() opens another
            return
        self.next_for(connection)

    def _trace(self, status: int, version: str) -> None:
        if self.timeline is not None:
            self.timeline.append((time.monotonic(), status, version))

    def next_for(self, connection: _Connection) -> None:
        """Give a free connection its next request, or park it."""
        if not connection.is_open:
            return
        if self.is_open_loop and self.backlog:
            self.send(connection, self.backlog.popleft())
        elif not self.is_open_loop and self.is_running:
            self.send(connection, time.monotonic())
        else:
            self.idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        if connection.is_busy:
            connection.is_busy = False
            self.in_flight -= 1
            self.errors += 1
            self._trace(0, "")
        if connection in self.idle:
            self.idle.remove(connection)
        if self.is_running and self.reconnects_left > 0:
            self.reconnects_left -= 1
            self.loop.create_task(self._open_one())

    def close(self) -> None:
        self.is_running = False
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()


def _summary(
    run: _Run, *, elapsed: float, unfinished: int, extra: dict[str, Any]
) -> dict[str, Any]:
    latencies = np.asarray(run.latencies) * 1000
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) if latencies.size else (np.nan,) * 3
    return {
        **extra,
        "connections": run.connections,
        "requests": run.ok + run.errors,
        "ok": run.ok,
        "errors": run.errors,
        "unfinished": unfinished,
        "rps": run.ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(latencies.max()) if latencies.size else float("nan"),
        "by_status": _by_status(run.statuses, latencies),
    }


def _by_status(statuses: list[int], latencies_ms: np.ndarray) -> dict[str, dict[str, float]]:
    """Count, p50, p99 and max latency of the answered requests of each status (a 200 and a shed
    503 are different stories)."""
    codes = np.asarray(statuses)
    answered = latencies_ms[: codes.size]
    summary = {}
    for status in np.unique(codes):
        picked = answered[codes == status]
        p50, p99 = np.percentile(picked, [50, 99])
        summary[str(status)] = {
            "count": float(picked.size),
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "max_ms": float(picked.max()),
        }
    return summary


def _timeline(run: _Run, start: float, bin_s: float) -> dict[str, Any]:
    """How many requests ended in each ``bin_s`` interval from ``start`` (monotonic clock, the
    same in every process), per ``"STATUS VERSION"`` (``"200 2"``; status 0: a transport failure,
    no version)."""
    assert run.timeline is not None
    series: dict[str, list[int]] = {}
    bins = max(1, int((max((t for t, _, _ in run.timeline), default=start) - start) / bin_s) + 1)
    for when, status, version in run.timeline:
        counts = series.setdefault(f"{status} {version}".strip(), [0] * bins)
        counts[max(0, int((when - start) / bin_s))] += 1
    return {"start": start, "bin_s": bin_s, "series": series}


async def open_loop(
    port: int,
    path: str,
    body: bytes,
    *,
    rate: float,
    duration: float,
    connections: int,
    authorization: str | None = None,
) -> dict[str, Any]:
    """Send ``rate * duration`` requests on schedule over ``connections`` keep-alive connections."""
    request = encode_request(port, path, body, authorization)
    run = _Run(port, request, connections, is_open=True)
    await run.connect()
    total = max(1, round(rate * duration))
    start = time.monotonic() + START_DELAY_S
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now + TICK_S - start) * rate) + 1)
        while sent < due:
            scheduled = start + sent / rate
            if run.idle:
                run.lags.append(max(0.0, now - scheduled))
                run.send(run.idle.popleft(), min(scheduled, now))
            else:
                run.backlog.append(scheduled)
            sent += 1
        await asyncio.sleep(max(TICK_S, start + sent / rate - TICK_S - time.monotonic()))
    deadline = time.monotonic() + DRAIN_S
    while (run.backlog or run.in_flight) and time.monotonic() < deadline:
        await asyncio.sleep(TICK_S)
    unfinished = len(run.backlog) + run.in_flight
    # Unfinished requests are late by at least the time they have waited: count them so.
    end = time.monotonic()
    run.latencies.extend(end - scheduled for scheduled in run.backlog)
    run.close()
    elapsed = max(run.last_done, start + duration) - start
    lag_p99 = float(np.percentile(run.lags, 99) * 1000) if run.lags else 0.0
    return _summary(
        run,
        elapsed=elapsed,
        unfinished=unfinished,
        extra={"mode": "open", "rate": rate, "lag_p99_ms": lag_p99},
    )


async def closed_loop(
    port: int,
    path: str,
    body: bytes,
    *,
    duration: float,
    connections: int,
    authorization: str | None = None,
    timeline_bin_s: float = 0.0,
) -> dict[str, Any]:
    """Keep ``connections`` requests in flight for ``duration`` seconds; with ``timeline_bin_s``,
    the result's ``timeline`` (``_timeline``) too."""
    request = encode_request(port, path, body, authorization)
    run = _Run(port, request, connections, is_open=False, traced=timeline_bin_s > 0)
    start = time.monotonic()
    await run.connect()
    await asyncio.sleep(max(0.0, duration - (time.monotonic() - start)))
    run.is_running = False
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + DRAIN_S
    while run.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(TICK_S)
    unfinished = run.in_flight
    run.close()
    extra: dict[str, Any] = {"mode": "closed"}
    if timeline_bin_s > 0:
        extra["timeline"] = _timeline(run, start, timeline_bin_s)
    return _summary(run, elapsed=elapsed, unfinished=unfinished, extra=extra)


def measure(
    mode: str,
    port: int,
    path: str,
    body_file: Path,
    *,
    duration: float,
    connections: int,
    rate: float = 0.0,
    authorization: str | None = None,
    timeline_bin_s: float = 0.0,
) -> dict[str, Any]:
    """Run this module as a separate process (its own interpreter and core) and return its JSON;
    ``authorization``, the ``Authorization`` header's value, reaches it in ``BENCH_AUTH``."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        mode,
        "--port",
        str(port),
        "--path",
        path,
        "--body",
        str(body_file),
        "--duration",
        str(duration),
        "--connections",
        str(connections),
        "--rate",
        str(rate),
        "--timeline-bin",
        str(timeline_bin_s),
    ]
    env = {k: v for k, v in os.environ.items() if k != AUTH_ENV}
    if authorization:
        env[AUTH_ENV] = authorization
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration + SUBPROCESS_SLACK_S,
        check=False,
        env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["open", "closed"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (open loop)")
    parser.add_argument(
        "--timeline-bin", type=float, default=0.0, help="seconds a timeline bin (closed loop)"
    )
    args = parser.parse_args()
    body = args.body.read_bytes()
    authorization = os.environ.get(AUTH_ENV) or None
    if args.mode == "open":
        if args.rate <= 0:
            parser.error("open loop needs --rate > 0")
        coroutine = open_loop(
            args.port,
            args.path,
            body,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            authorization=authorization,
        )
    else:
        coroutine = closed_loop(
            args.port,
            args.path,
            body,
            duration=args.duration,
            connections=args.connections,
            authorization=authorization,
            timeline_bin_s=args.timeline_bin,
        )
    print(json.dumps(uvloop.run(coroutine)))


if __name__ == "__main__":
    main()
