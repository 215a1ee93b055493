"""The HTTP front against hostile clients: cross-site requests and DNS rebinding refused, request
heads capped, slow requests timed out, keep-alive and pipelining intact (issue 8, items 2 and 7)."""

from __future__ import annotations

import json
import select
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from rawhttp import Raw, raw_request
from servers import Server
from tables import csv_bytes as _csv

MIB = 1024 * 1024
EVIL_HOST = "evil.example"
EVIL_ORIGIN = "http://evil.example"
INFER = "/v2/models/lr/infer"


def _infer_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()


# Item 2: cross-site requests and DNS rebinding


def test_cross_site_requests_that_change_state_are_refused(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    alias = f"{server.url}/api/models/lr/aliases/staging"

    simple = httpx.put(
        alias,
        content=b'{"version": 1}',
        headers={"Content-Type": "text/plain", "Origin": EVIL_ORIGIN},
    )
    assert simple.status_code == 403, simple.text
    assert "Origin" in simple.json()["error"]
    fetched = httpx.put(alias, json={"version": 1}, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403, fetched.text
    assert "Sec-Fetch-Site" in fetched.json()["error"]
    deleted = httpx.delete(
        f"{server.url}/api/models/lr/aliases/production", headers={"Origin": EVIL_ORIGIN}
    )
    assert deleted.status_code == 403
    plain = httpx.put(alias, content=b'{"version": 1}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 400
    assert "application/json" in plain.json()["error"]
    assert httpx.get(f"{server.url}/api/models").json()[0]["aliases"] == {"production": 1}

    own = httpx.put(alias, json={"version": 1}, headers={"Origin": server.url})
    assert own.status_code == 200, own.text
    assert httpx.put(alias, json={"version": 1}).status_code == 200

    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    form = {
        "data": {"name": "lr"},
        "files": {
            "model": ("model.skops", model.read_bytes()),
            "reference": ("r.csv", _csv(tabular_data[0][:20])),
        },
    }
    port = server.port
    for headers in (
        {"Host": f"{EVIL_HOST}:{port}", "Origin": f"{EVIL_ORIGIN}:{port}"},
        {"Origin": f"{EVIL_ORIGIN}:{port}"},
        {"Origin": "null"},
    ):
        refused = httpx.post(f"{server.url}/api/models", headers=headers, timeout=60, **form)
        assert refused.status_code == 403, (headers, refused.text)
    versions = httpx.get(f"{server.url}/api/models/lr").json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_a_foreign_host_is_refused_everywhere(
    served: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_ALLOWED_HOSTS", "dockyard.internal, *.models.example")
    server = start_server(served, "--workers", "1")
    port = server.port
    body = _infer_body(tabular_data[0][:2])
    requests = [
        ("GET", "/v2/health/live", b""),
        ("GET", "/v2/health/ready", b""),
        ("POST", INFER, body),
        ("POST", "/v1/models/lr:predict", b'{"instances": [[0.0]]}'),
        ("GET", "/v2/models/lr", b""),
        ("GET", "/api/models", b""),
        ("GET", "/docs", b""),
    ]
    for method, path, content in requests:
        for host in (
            f"{EVIL_HOST}:{port}",
            EVIL_HOST,
            f"127.0.0.1.{EVIL_HOST}",
            "dockyard.internal.evil",
        ):
            refused = httpx.request(
                method, f"{server.url}{path}", content=content, headers={"Host": host}
            )
            assert refused.status_code == 403, (method, path, host, refused.text)
            assert "Host" in refused.json()["error"]
    for host in (
        f"localhost:{port}",
        "127.0.0.1",
        f"[::1]:{port}",
        f"dockyard.internal:{port}",
        "a.models.example",
    ):
        answer = httpx.post(f"{server.url}{INFER}", content=body, headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
        assert httpx.get(f"{server.url}/api/models", headers={"Host": host}).status_code == 200


# Item 7: request heads


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv("DOCKYARD_HEADER_TIMEOUT_S", "2")
    monkeypatch.setenv("DOCKYARD_BODY_TIMEOUT_S", "2")
    return 2.0


def test_an_oversized_head_is_refused_with_431_and_closed(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
) -> None:
    server = start_server(served, "--workers", "2")

    huge = connect(server)
    huge.send(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
    sent = huge.send_until_answered(b"a" * 16 * 1024 for _ in range(96 * 64))
    assert sent < 4 * MIB, f"sent {sent / MIB:.0f} MB of one header before an answer"
    status, headers, body = huge.response()
    assert status == 431
    assert "max_header_bytes" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert huge.is_closed(within=5)

    many = connect(server)
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(150))
    many.send(f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode())
    status, _, body = many.response()
    assert status == 431
    assert "max_headers" in json.loads(body)["error"]
    assert many.is_closed(within=5)

    long_url = connect(server)
    long_url.send(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert long_url.response()[0] == 431

    fine = connect(server)
    fine.send(raw_request("GET", "/v2/health/live", {"X-Pad": "a" * 30_000}))
    assert fine.response()[0] == 200


def test_slow_heads_and_bodies_are_timed_out(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    short_deadlines: float,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    started = time.monotonic()
    trickled = connect(server)
    answer = b""
    for byte in b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n":
        try:
            trickled.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([trickled.sock], [], [], 0.5)[0]:
            answer = trickled.sock.recv(65536)
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < short_deadlines + 3
    assert trickled.is_closed(within=2)

    body = _infer_body(tabular_data[0][:2])
    stalled = connect(server)
    stalled.send(raw_request("POST", INFER, {"Content-Type": "application/json"}, body)[:-10])
    started = time.monotonic()
    status, _, _ = stalled.response()
    assert status == 408
    assert time.monotonic() - started < short_deadlines + 3
    assert stalled.is_closed(within=2)

    silent = connect(server)
    assert silent.is_closed(within=short_deadlines + 3)

    steady = connect(server)
    request = raw_request("POST", INFER, {"Content-Type": "application/json"}, body)
    head, _, rest = request.partition(b"\r\n\r\n")
    steady.send(head + b"\r\n\r\n")
    for start in range(0, len(rest), len(rest) // 4 + 1):
        time.sleep(short_deadlines * 0.6)
        steady.send(rest[start : start + len(rest) // 4 + 1])
    assert steady.response()[0] == 200


def test_keep_alive_and_pipelining_still_work(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    short_deadlines: float,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    body = _infer_body(tabular_data[0][:2])
    raw = connect(server)
    pipelined = (
        raw_request("GET", "/v2/health/live", {})
        + raw_request("POST", INFER, {"Content-Type": "application/json"}, body)
        + raw_request("GET", "/v2/health/ready", {})
    )
    raw.send(pipelined)
    assert [raw.response()[0] for _ in range(3)] == [200, 200, 200]
    time.sleep(short_deadlines + 1.5)
    raw.send(raw_request("POST", INFER, {"Content-Type": "application/json"}, body))
    assert raw.response()[0] == 200
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            assert client.post(INFER, content=body).status_code == 200
