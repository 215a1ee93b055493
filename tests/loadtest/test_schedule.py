"""The open and closed loops against a small real HTTP server in this process (its delay and
``Connection: close`` chosen per test): every request ends once, as a success or a named error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from dockyard.loadtest.closed_loop import closed_loop
from dockyard.loadtest.connections import (
    CONNECT_FAILED,
    DROPPED,
    TIMEOUT,
    Tally,
    encode_requests,
)
from dockyard.loadtest.open_loop import open_loop
from dockyard.loadtest.target import Target

BODY = b'{"inputs": []}'


@dataclass
class Behaviour:
    delay_s: float = 0.0
    closes: bool = False
    status: int = 200
    seen: int = 0


async def _handle(
    behaviour: Behaviour, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            behaviour.seen += 1
            await asyncio.sleep(behaviour.delay_s)
            close = b"Connection: close\r\n" if behaviour.closes else b""
            writer.write(
                f"HTTP/1.1 {behaviour.status} X\r\nContent-Length: 2\r\n".encode()
                + close
                + b"\r\n{}"
            )
            await writer.drain()
            if behaviour.closes:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., tuple[Target, Behaviour]]]:
    """Factory: a server on a free loopback port behaving as asked; a Target of it."""
    started: list[asyncio.Server] = []

    async def start(**how: object) -> tuple[Target, Behaviour]:
        behaviour = Behaviour(**how)  # type: ignore[arg-type]
        listening = await asyncio.start_server(
            lambda r, w: _handle(behaviour, r, w), "127.0.0.1", 0
        )
        started.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return Target(f"http://127.0.0.1:{port}", "m"), behaviour

    yield start  # type: ignore[misc]
    for listening in started:
        listening.close()


def _check(tally: Tally) -> None:
    assert tally.ok + tally.error_count == tally.sent
    assert len(tally.latencies) == tally.ok


async def test_open_loop_sends_its_schedule(server: Callable[..., object]) -> None:
    target, behaviour = await server()  # type: ignore[misc]
    tally = Tally()
    elapsed = await open_loop(
        target,
        encode_requests(target, [BODY]),
        rate=200,
        duration_s=0.5,
        max_in_flight=16,
        timeout_s=1,
        tally=tally,
    )
    _check(tally)
    assert tally.sent == 100 == tally.ok == behaviour.seen
    assert 0.5 <= elapsed < 1.0
    assert all(latency >= 0 for latency in tally.latencies)


async def test_latency_counts_from_the_schedule_not_the_send(
    server: Callable[..., object],
) -> None:
    """One connection and a 50 ms server at 100 req/s: requests wait their turn, and each
    latency includes that wait (a closed-loop client would report 50 ms each)."""
    target, _ = await server(delay_s=0.05)  # type: ignore[misc]
    tally = Tally()
    await open_loop(
        target,
        encode_requests(target, [BODY]),
        rate=100,
        duration_s=0.3,
        max_in_flight=1,
        timeout_s=2,
        tally=tally,
    )
    _check(tally)
    assert tally.errors[DROPPED] > 0  # one in flight at most: the rest are dropped, not queued
    assert tally.ok >= 5


async def test_requests_past_their_timeout_fail(server: Callable[..., object]) -> None:
    target, _ = await server(delay_s=0.5)  # type: ignore[misc]
    tally = Tally()
    await open_loop(
        target,
        encode_requests(target, [BODY]),
        rate=50,
        duration_s=0.2,
        max_in_flight=64,
        timeout_s=0.1,
        tally=tally,
    )
    _check(tally)
    assert tally.errors == {TIMEOUT: 10}


async def test_a_server_that_is_not_there_is_connect_errors() -> None:
    target = Target("http://127.0.0.1:9", "m")
    tally = Tally()
    await open_loop(
        target,
        encode_requests(target, [BODY]),
        rate=50,
        duration_s=0.1,
        max_in_flight=4,
        timeout_s=0.5,
        tally=tally,
    )
    _check(tally)
    assert tally.ok == 0
    assert tally.errors[CONNECT_FAILED] > 0


async def test_error_statuses_are_counted_by_status(server: Callable[..., object]) -> None:
    target, _ = await server(status=503)  # type: ignore[misc]
    tally = Tally()
    await open_loop(
        target,
        encode_requests(target, [BODY]),
        rate=100,
        duration_s=0.1,
        max_in_flight=4,
        timeout_s=1,
        tally=tally,
    )
    _check(tally)
    assert tally.errors == {"HTTP 503": 10}


@pytest.mark.parametrize("closes", [False, True], ids=["keep-alive", "connection-close"])
async def test_closed_loop_keeps_its_clients_busy(
    server: Callable[..., object], closes: bool
) -> None:
    target, behaviour = await server(delay_s=0.005, closes=closes)  # type: ignore[misc]
    tally = Tally()
    elapsed = await closed_loop(
        target,
        encode_requests(target, [BODY]),
        connections=4,
        duration_s=0.3,
        timeout_s=1,
        tally=tally,
    )
    _check(tally)
    assert tally.ok > 20
    assert tally.error_count == 0
    assert elapsed >= 0.3
    assert behaviour.seen == tally.sent
