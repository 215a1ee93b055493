"""The per-worker connection cap, driven in process: connections past ``max_connections`` get a
JSON 503 with Retry-After for their first request and are closed; the admitted ones are served."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from dockyard.reliability.http_limits import (
    TURN_AWAY_GRACE_S,
    HttpLimits,
    LimitedHttpProtocol,
    limited_protocol,
)
from transports import Transport

LIMITS = HttpLimits(max_connections=2)
REQUEST = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


Connect = Callable[[], tuple[LimitedHttpProtocol, Transport]]


@pytest.fixture
def state() -> ServerState:
    """One worker's server state: the connections it holds."""
    return ServerState()


@pytest.fixture
def connect(state: ServerState) -> Iterator[Connect]:
    """Factory: a new connection to the same worker; all are closed afterwards."""
    opened: list[LimitedHttpProtocol] = []
    protocol_class = limited_protocol(LIMITS)
    config = uvicorn.Config(ok, http=protocol_class, log_level="warning")
    config.load()

    def open_one() -> tuple[LimitedHttpProtocol, Transport]:
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        opened.append(protocol)
        return protocol, transport

    yield open_one
    for protocol in opened:
        protocol.connection_lost(None)


async def test_a_connection_past_the_cap_gets_a_json_503_and_is_closed(
    connect: Connect, state: ServerState
) -> None:
    admitted = [connect() for _ in range(LIMITS.max_connections)]
    protocol, transport = connect()
    assert len(state.connections) == LIMITS.max_connections
    assert not transport.written  # nothing before the client asks

    protocol.data_received(REQUEST)
    head, _, body = transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1\r\n" in head
    assert b"content-type: application/json\r\n" in head
    assert b"connection: close" in head
    assert "max_connections" in json.loads(body)["error"]
    assert transport.closed

    first, first_transport = admitted[0]
    first.data_received(REQUEST)
    for _ in range(10):
        if first_transport.written:
            break
        await asyncio.sleep(0)
    assert first_transport.written.startswith(b"HTTP/1.1 200 OK")


async def test_a_connection_past_the_cap_that_sends_nothing_is_closed_after_a_grace(
    connect: Connect,
) -> None:
    for _ in range(LIMITS.max_connections):
        connect()
    protocol, transport = connect()
    now = protocol.loop.time()
    protocol.check_deadline(now)
    assert not transport.closed
    protocol.check_deadline(now + TURN_AWAY_GRACE_S)
    assert transport.closed
    assert not transport.written


async def test_a_closed_connection_frees_its_place(connect: Connect, state: ServerState) -> None:
    first, _ = connect()
    connect()
    first.connection_lost(None)
    third, _ = connect()
    assert third in state.connections
    assert len(state.connections) == LIMITS.max_connections
