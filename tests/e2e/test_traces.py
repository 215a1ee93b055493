"""Traces (extra ``otel``) against a real OTLP/HTTP receiver: a real ``dockyard serve`` with two
workers sends a span per request (continuing the caller's ``traceparent``), a span per batch linked
to the requests it served, and a predict span inside each batch; the last ones are sent when it
stops. With traces off the extra (OpenTelemetry's SDK and exporter) is never imported; with them on
and the extra missing, ``serve`` stops in one line."""

from __future__ import annotations

import asyncio
import gzip
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.errors import MissingExtra
from dockyard.monitoring.tracing import Traces
from dockyard.registry.refs import parse_ref
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.gateway import build_local_gateway
from servers import Server

pytestmark = pytest.mark.e2e

ROW = [0.25] * 30
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
WAIT_S = 10.0
EXTRA_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter")


def _v2(rows: int = 1, width: int = 30) -> dict[str, Any]:
    data = [0.25] * (rows * width)
    return {"inputs": [{"name": "x", "shape": [rows, width], "datatype": "FP64", "data": data}]}


class Receiver:
    """A tiny OTLP/HTTP traces receiver on 127.0.0.1: keeps every span POSTed to /v1/traces,
    with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (the name http.server calls)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(resource, span) for span in scope_spans.spans]

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [span for _, span in self.spans if span.name == name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _attributes(attributes: Any) -> dict[str, Any]:
    """OTLP key-values as a dict (the one value each holds)."""
    found = {}
    for pair in attributes:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


def _block_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every import of the ``otel`` extra's packages (the SDK, the exporter) fail, as where
    they are not installed. (The OpenTelemetry API is FastAPI's own dependency.)"""
    for package in EXTRA_PACKAGES:
        for name in [name for name in sys.modules if name.startswith(f"{package}.")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, package, None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


async def _burst(url: str, count: int) -> None:
    """``count`` requests at once, so that some share a batch."""
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(
            *(
                client.post(url, json=_v2(), headers={"X-Request-ID": f"burst-{i}"})
                for i in range(count)
            )
        )
    assert [answer.status_code for answer in answers] == [200] * count


def test_request_batch_and_predict_spans_reach_a_collector_when_the_server_stops(
    served: Path,
    start_server: Callable[..., Server],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_TRACES", "true")
    monkeypatch.setenv("DOCKYARD_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # sent only when the workers stop
    server = start_server(served, "--workers", "2")
    infer = f"{server.url}/v2/models/lr/infer"
    sent = {
        "plain": httpx.post(infer, json=_v2(3), headers={"X-Request-ID": "plain"}),
        "traced": httpx.post(
            infer,
            json=_v2(),
            headers={"X-Request-ID": "traced", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        ),
        "v1": httpx.post(
            f"{server.url}/v1/models/lr:predict",
            json={"instances": [ROW, ROW]},
            headers={"X-Request-ID": "v1"},
        ),
        "bad": httpx.post(infer, json=_v2(1, 29), headers={"X-Request-ID": "bad"}),
        # A caller's traceparent is hostile input: malformed or huge, it is ignored (a trace of
        # the server's own starts), never an error.
        "malformed": httpx.post(
            infer,
            json=_v2(),
            headers={"X-Request-ID": "malformed", "traceparent": f"00-{TRACE_ID}-zz-01; DROP"},
        ),
        "oversized": httpx.post(
            infer,
            json=_v2(),
            headers={"X-Request-ID": "oversized", "traceparent": f"00-{TRACE_ID * 600}-01"},
        ),
    }
    assert [answer.status_code for answer in sent.values()] == [200, 200, 200, 400, 200, 200]
    asyncio.run(_burst(infer, 8))
    assert receiver.spans == []  # queued in the workers

    server.stop()
    assert server.process.returncode == 0
    deadline = time.monotonic() + WAIT_S
    while len(receiver.named("dockyard.request")) < 14:
        assert time.monotonic() < deadline, "the request spans did not arrive"
        time.sleep(0.05)

    requests = {
        _attributes(span.attributes)["dockyard.request_id"]: span
        for span in receiver.named("dockyard.request")
    }
    assert set(requests) == {"plain", "traced", "v1", "bad", "malformed", "oversized"} | {
        f"burst-{i}" for i in range(8)
    }
    plain = _attributes(requests["plain"].attributes)
    assert plain == {
        "dockyard.route": "v2",
        "dockyard.model": "lr",
        "dockyard.version": 1,
        "dockyard.request_id": "plain",
        "dockyard.rows": 3,
        "http.response.status_code": 200,
    }
    assert requests["plain"].kind == Span.SPAN_KIND_SERVER
    assert requests["plain"].status.code == Status.STATUS_CODE_UNSET
    assert _attributes(requests["v1"].attributes)["dockyard.route"] == "v1"
    assert _attributes(requests["v1"].attributes)["dockyard.rows"] == 2
    traced = requests["traced"]
    assert traced.trace_id.hex() == TRACE_ID
    assert traced.parent_span_id.hex() == PARENT_ID
    assert requests["plain"].trace_id.hex() != TRACE_ID
    assert requests["plain"].parent_span_id == b""
    for hostile in ("malformed", "oversized"):
        assert requests[hostile].parent_span_id == b""
        assert requests[hostile].trace_id.hex() != TRACE_ID
    bad = requests["bad"]
    assert bad.status.code == Status.STATUS_CODE_ERROR
    assert _attributes(bad.attributes)["http.response.status_code"] == 400
    assert _attributes(bad.attributes)["error.type"] == "SignatureMismatch"
    assert _attributes(bad.attributes)["dockyard.version"] == 1

    # Each answered request is served by exactly one batch, which links to it; a batch's rows
    # are its requests' rows.
    ids = {(span.trace_id, span.span_id): name for name, span in requests.items()}
    served_by: dict[str, int] = {}
    batches = receiver.named("dockyard.batch")
    for batch in batches:
        linked = [ids[(link.trace_id, link.span_id)] for link in batch.links]
        for name in linked:
            served_by[name] = served_by.get(name, 0) + 1
        attributes = _attributes(batch.attributes)
        assert attributes["dockyard.requests"] == len(linked)
        rows = sum(_attributes(requests[name].attributes)["dockyard.rows"] for name in linked)
        assert attributes["dockyard.rows"] == rows
        assert batch.parent_span_id == b""
    assert served_by == {name: 1 for name in requests if name != "bad"}

    predicts = receiver.named("dockyard.predict")
    assert sorted((p.trace_id, p.parent_span_id) for p in predicts) == sorted(
        (b.trace_id, b.span_id) for b in batches
    )

    resources = [resource for resource, _ in receiver.spans]
    assert {resource["service.name"] for resource in resources} == {"dockyard"}
    pids = {resource["process.pid"] for resource in resources}
    assert server.process.pid not in pids  # the workers trace, the supervisor does not


async def test_with_traces_off_the_extra_is_never_imported(
    served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _block_the_extra(monkeypatch)  # an import of it would fail
    settings = load_settings({"home": served}, env={})
    workspace = Workspace.open(settings)
    gateway = build_local_gateway(workspace, [parse_ref("lr@production")])
    try:
        app = create_app(settings, gateway, Authenticator(None))
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": orjson.dumps(_v2(2)), "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v2/models/lr/infer",
            "headers": [(b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode())],
        }
        for _ in range(3):
            await app(scope, receive, send)
    finally:
        gateway.close()
    assert [message["status"] for message in sent[::2]] == [200] * 3
    outputs = orjson.loads(sent[1]["body"])["outputs"]
    assert np.asarray(outputs[0]["data"]).shape == (2,)


def test_traces_without_the_extra_stop_serve_in_one_line(
    served: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _block_the_extra(monkeypatch)
    with pytest.raises(MissingExtra, match=r"pip install 'dockyard\[otel\]'"):
        Traces.for_worker(load_settings({"home": served, "traces": True}, env={}))

    code, out, err = run_cli(capsys, "serve", "--traces", "--home", str(served), "--port", "0")
    assert code == MissingExtra.exit_code
    assert err.strip().splitlines() == [
        "error: OpenTelemetry (for traces) is not installed; install it with: "
        "pip install 'dockyard[otel]'"
    ]
    assert "serving" not in out
