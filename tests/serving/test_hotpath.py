"""The pure ASGI hot path, driven in process: headers, request ids and how the body is read."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.types import ASGIApp, Message

from dockyard.config import load_settings
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.gateway import LocalGateway, build_local_gateway

BODY_LIMIT = 50_000
INFER = "/v2/models/lr/infer"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[LocalGateway]:
    settings = load_settings({"home": tmp_path_factory.mktemp("home")}, env={})
    workspace = Workspace.open(settings)
    register(workspace, logistic, Registration(name="lr", reference_data=tabular_data[0][:100]))
    gateway = build_local_gateway(workspace, [parse_ref("lr")])
    yield gateway
    gateway.close()


@pytest.fixture
def app(gateway: LocalGateway, tmp_path_factory: pytest.TempPathFactory) -> ASGIApp:
    settings = load_settings(
        {"home": tmp_path_factory.mktemp("unused"), "max_body_bytes": BODY_LIMIT}, env={}
    )
    return create_app(settings, gateway, Authenticator(None))


class Exchange:
    """One request through the app: the body as ASGI messages, the response as sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        body: bytes = self.sent[1]["body"]
        return body


async def post(
    app: ASGIApp, path: str, body: bytes | list[bytes], headers: dict[bytes, bytes] | None = None
) -> Exchange:
    chunks = body if isinstance(body, list) else [body]
    raw = [(b"content-type", b"application/json"), *(headers or {}).items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
    }
    exchange = Exchange(chunks)
    await app(scope, exchange.receive, exchange.send)
    return exchange


def infer_body(rows: np.ndarray, data: list[Any] | None = None, **extra: Any) -> bytes:
    """A V2 request for ``rows`` (or ``data`` in their shape) as one FP64 tensor."""
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    values = rows.ravel().tolist() if data is None else data
    return orjson.dumps({"inputs": [{**tensor, "data": values}], **extra})


async def test_an_answer_has_type_length_and_a_fresh_request_id(
    app: ASGIApp, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:2]
    body = infer_body(rows, outputs=[{"name": "predict_proba"}])

    first, second = await post(app, INFER, body), await post(app, INFER, body)

    assert first.status == 200
    assert first.headers[b"content-type"] == b"application/json"
    assert first.headers[b"content-length"] == b"%d" % len(first.body)
    assert first.headers[b"x-request-id"] != second.headers[b"x-request-id"]
    (output,) = orjson.loads(first.body)["outputs"]
    np.testing.assert_array_equal(
        np.array(output["data"]).reshape(output["shape"]), logistic.predict_proba(rows)
    )


async def test_the_callers_request_id_comes_back_on_success_and_on_error(
    app: ASGIApp, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:1]
    good = await post(app, INFER, infer_body(rows), {b"x-request-id": b"caller-7"})
    data: list[Any] = rows.ravel().tolist()
    data[3] = "NaN"
    bad = await post(app, INFER, infer_body(rows, data), {b"x-request-id": b"caller-8"})

    assert (good.status, good.headers[b"x-request-id"]) == (200, b"caller-7")
    assert (bad.status, bad.headers[b"x-request-id"]) == (400, b"caller-8")
    assert "contains NaN or infinity in feature" in orjson.loads(bad.body)["error"]


async def test_a_body_in_several_messages_or_gzipped_reads_the_same(
    app: ASGIApp, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_body(tabular_data[0][:3])
    whole = await post(app, INFER, body)
    pieces = await post(app, INFER, [body[:10], b"", body[10:50], body[50:]])
    zipped = await post(app, INFER, gzip.compress(body), {b"content-encoding": b"gzip"})

    assert whole.status == pieces.status == zipped.status == 200
    assert whole.body == pieces.body == zipped.body
    assert pieces.received == 4


async def test_too_large_a_body_is_refused_while_it_streams(app: ASGIApp) -> None:
    chunk = b" " * (BODY_LIMIT // 2 + 1)
    streamed = await post(app, INFER, [chunk, chunk, chunk])
    declared = await post(app, INFER, b"{}", {b"content-length": b"%d" % (BODY_LIMIT + 1)})

    assert (streamed.status, declared.status) == (413, 413)
    assert streamed.received == 2  # stopped at the message that went past the limit
    assert declared.received == 0
    # The rest of the body is never read: the connection closes instead of parsing it.
    assert streamed.headers[b"connection"] == declared.headers[b"connection"] == b"close"


async def test_an_unknown_model_is_answered_before_the_body_is_read(app: ASGIApp) -> None:
    answer = await post(app, "/v2/models/nope/infer", b"{}", {b"x-request-id": b"r-1"})

    assert (answer.status, answer.headers[b"x-request-id"]) == (404, b"r-1")
    assert answer.received == 0


async def test_binary_outputs_say_where_the_json_ends(
    app: ASGIApp, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_body(tabular_data[0][:2], parameters={"binary_data_output": True})
    answer = await post(app, INFER, body)

    assert answer.headers[b"content-type"] == b"application/octet-stream"
    json_length = int(answer.headers[b"inference-header-content-length"])
    header = orjson.loads(answer.body[:json_length])
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert json_length + sum(sizes) == len(answer.body)


async def test_v1_predict_takes_the_same_path(
    app: ASGIApp, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:2]
    answer = await post(app, "/v1/models/lr:predict", orjson.dumps({"instances": rows.tolist()}))

    assert answer.status == 200
    assert orjson.loads(answer.body)["predictions"] == logistic.predict(rows).tolist()
    assert answer.headers[b"x-request-id"]
