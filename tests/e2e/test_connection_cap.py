"""The cap on a worker's concurrent connections against a real server: past ``max_connections`` a
new connection's request is answered 503 with a JSON error and Retry-After, and it is closed; once
the held connections close, new ones are served again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rawhttp import Raw, raw_request
from servers import Server

pytestmark = pytest.mark.e2e
CAP = 3
LIVE = raw_request("GET", "/v2/health/live", {})
START_OF_A_HEAD = b"GET /v2/health/live HTTP/1.1\r\n"


def held(server: Server, connect: Callable[[Server], Raw]) -> Raw:
    """A connection the worker admitted and keeps: answered once, then inside a second head
    (waiting on the header deadline, not uvicorn's 5 s keep-alive)."""
    for _ in range(50):
        connection = connect(server)
        connection.send(LIVE)
        if connection.response()[0] == 200:
            connection.send(START_OF_A_HEAD)
            return connection
        time.sleep(0.1)  # the readiness probe's connection was still counted
    raise AssertionError("no connection admitted")


def served_again(server: Server, connect: Callable[[Server], Raw], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        connection = connect(server)
        connection.send(LIVE)
        if connection.response()[0] == 200:
            return True
        time.sleep(0.1)
    return False


def test_a_connection_past_the_cap_gets_503_and_is_closed(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_MAX_CONNECTIONS", str(CAP))
    monkeypatch.setenv("DOCKYARD_HEADER_TIMEOUT_S", "120")
    server = start_server(served, "--workers", "1")
    kept = [held(server, connect) for _ in range(CAP)]

    extra = connect(server)
    extra.send(LIVE)
    status, headers, body = extra.response()
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert f"maximum of {CAP} connections" in error
    assert "max_connections" in error
    assert extra.is_closed(within=5)

    answer = httpx.get(f"{server.url}/v2/health/live", timeout=10)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "max_connections" in answer.json()["error"]

    silent = connect(server)
    assert silent.is_closed(within=5)  # a connection past the cap that never asks: closed

    for connection in kept:
        connection.sock.close()
    assert served_again(server, connect, within=10)
    assert server.process.poll() is None
