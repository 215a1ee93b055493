"""The limited HTTP protocol, driven in process: head caps (431), slow heads and bodies (408),
and ordinary requests, keep-alive and pipelining untouched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from dockyard.reliability.http_limits import (
    HttpLimits,
    LimitedHttpProtocol,
    limited_protocol,
)
from transports import Transport

LIMITS = HttpLimits(max_header_bytes=4096, max_headers=10, header_timeout_s=5, body_timeout_s=5)


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body and answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


Connect = Callable[[], tuple[LimitedHttpProtocol, Transport]]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Factory: a protocol with LIMITS on a fresh fake connection; all are closed afterwards."""
    opened: list[LimitedHttpProtocol] = []
    protocol_class = limited_protocol(LIMITS)

    def open_one() -> tuple[LimitedHttpProtocol, Transport]:
        config = uvicorn.Config(echo_length, http=protocol_class, log_level="warning")
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        opened.append(protocol)
        return protocol, transport

    yield open_one
    for protocol in opened:
        protocol.connection_lost(None)


def request(path: str = "/", body: bytes = b"", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answered(transport: Transport, count: int = 1) -> None:
    for _ in range(100):
        if transport.written.count(b"HTTP/1.1 ") >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"no answer: {transport.written!r}")


async def test_ordinary_pipelined_requests_pass(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(request(body=b"abc") + request(body=b"hello"))
    await answered(transport, 2)
    protocol.data_received(request(body=b"x" * 3000, extra="X-Pad: " + "a" * 1000 + "\r\n"))
    await answered(transport, 3)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert transport.written.endswith(b"3000")
    assert not transport.closed


@pytest.mark.parametrize(
    ("head", "setting"),
    [
        (request(extra="X-Pad: " + "a" * 5000 + "\r\n"), "max_header_bytes"),
        (request(path="/" + "a" * 5000), "max_header_bytes"),
        (request(extra="".join(f"X-{i}: {i}\r\n" for i in range(11))), "max_headers"),
    ],
    ids=["long-header", "long-url", "many-headers"],
)
async def test_a_head_over_the_limits_is_refused_and_never_reaches_the_app(
    connect: Connect, head: bytes, setting: str
) -> None:
    protocol, transport = connect()
    protocol.data_received(head)
    await asyncio.sleep(0)
    assert transport.status() == 431
    assert setting in transport.error()
    assert b"connection: close" in transport.written
    assert transport.closed
    assert transport.written.count(b"HTTP/1.1 ") == 1


async def test_a_head_split_across_chunks_is_measured_exactly(connect: Connect) -> None:
    within, _ = connect()
    head = request(extra="X-Pad: " + "a" * 3000 + "\r\n")
    for start in range(0, len(head), 700):
        within.data_received(head[start : start + 700])
    assert not within.transport.is_closing()

    over, transport = connect()
    head = request(extra="X-Pad: " + "a" * 4200 + "\r\n")
    for start in range(0, len(head), 1000):
        over.data_received(head[start : start + 1000])
    assert transport.status() == 431


async def test_an_endless_header_is_cut_off_near_the_limit(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Pad: ")
    fed = 0
    while not transport.closed and fed < 1_000_000:
        protocol.data_received(b"a" * 512)
        fed += 512
    assert transport.status() == 431
    assert fed <= LIMITS.max_header_bytes + 512


async def test_a_connection_that_never_sends_is_closed_without_an_answer(
    connect: Connect,
) -> None:
    protocol, transport = connect()
    protocol.check_deadline(100.0)
    protocol.check_deadline(100.0 + LIMITS.header_timeout_s - 0.1)
    assert not transport.closed
    protocol.check_deadline(100.0 + LIMITS.header_timeout_s)
    assert transport.closed
    assert transport.written == b""


async def test_a_slow_head_gets_408(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHo")
    protocol.check_deadline(100.0)
    protocol.data_received(b"st: x\r\n")
    protocol.check_deadline(100.0 + LIMITS.header_timeout_s - 0.1)
    assert not transport.closed
    protocol.check_deadline(100.0 + LIMITS.header_timeout_s)
    assert transport.status() == 408
    assert "header_timeout_s" in transport.error()
    assert transport.closed


async def test_a_stalled_body_gets_408_but_a_moving_one_does_not(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(request(body=b"x" * 100)[:-60])
    await asyncio.sleep(0)
    for second in range(0, 30, 2):
        protocol.data_received(b"x")
        protocol.check_deadline(float(second))
    assert not transport.closed

    protocol.check_deadline(30.0)
    protocol.check_deadline(30.0 + LIMITS.body_timeout_s)
    assert transport.status() == 408
    assert "body_timeout_s" in transport.error()
    assert transport.closed
    await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 ") == 1  # the app's answer is dropped


async def test_a_body_the_server_is_not_reading_is_not_timed_out(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(request(body=b"x" * 100, extra="Expect: 100-continue\r\n")[:-100])
    protocol.check_deadline(0.0)
    protocol.check_deadline(LIMITS.body_timeout_s * 3)
    assert not transport.closed  # the client waits for "100 Continue", which the app has not asked

    paused, paused_transport = connect()
    paused.data_received(request(body=b"x" * 100)[:-50])
    paused.flow.pause_reading()
    paused.check_deadline(0.0)
    paused.check_deadline(LIMITS.body_timeout_s * 3)
    assert not paused_transport.closed


async def test_keep_alive_between_requests_is_left_to_uvicorn(connect: Connect) -> None:
    protocol, transport = connect()
    protocol.data_received(request(body=b"abc"))
    await answered(transport)
    protocol.check_deadline(0.0)
    protocol.check_deadline(LIMITS.body_timeout_s + LIMITS.header_timeout_s + 1)
    assert not transport.closed
