"""``max_rows``: the input plan refuses a request of more rows than the setting, on each of its
paths (one matrix, one column per feature, plain tensors), and the hot path answers 413."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.types import ASGIApp, Message

from dockyard.config import load_settings
from dockyard.errors import PayloadTooLarge
from dockyard.registry.plans import InputPlan
from dockyard.registry.records import Signature, TensorSpec
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.gateway import LocalGateway, build_local_gateway

LIMIT = 10
TABULAR = Signature(
    inputs=(TensorSpec("a", "FP64", (-1,)), TensorSpec("b", "INT64", (-1,))),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
    tabular=True,
)
IMAGES = Signature(
    inputs=(TensorSpec("image", "FP32", (-1, 2, 2)),),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
    tabular=False,
)


def too_many(rows: int) -> Any:
    message = f"request has {rows} rows; the limit is {LIMIT} (max_rows setting)"
    return pytest.raises(PayloadTooLarge, match="^" + re.escape(message) + "$")


def test_a_matrix_of_more_rows_than_the_limit_is_refused() -> None:
    plan = InputPlan(TABULAR, max_rows=LIMIT)
    assert plan.prepare({"input-0": np.zeros((LIMIT, 2))}).shape == (LIMIT, 2)  # type: ignore[attr-defined]
    with too_many(LIMIT + 1):
        plan.prepare({"input-0": np.zeros((LIMIT + 1, 2))})


def test_columns_of_more_rows_than_the_limit_are_refused() -> None:
    plan = InputPlan(TABULAR, max_rows=LIMIT)
    fits = {"a": np.zeros(LIMIT), "b": np.zeros(LIMIT, dtype=np.int64)}
    assert plan.prepare(fits).shape == (LIMIT, 2)  # type: ignore[attr-defined]
    with too_many(LIMIT + 5):
        plan.prepare({"a": np.zeros(LIMIT + 5), "b": np.zeros(LIMIT + 5, dtype=np.int64)})


def test_tensors_of_more_rows_than_the_limit_are_refused() -> None:
    plan = InputPlan(IMAGES, max_rows=LIMIT)
    plan.prepare({"image": np.zeros((LIMIT, 2, 2), dtype=np.float32)})
    with too_many(LIMIT + 1):
        plan.prepare({"image": np.zeros((LIMIT + 1, 2, 2), dtype=np.float32)})


def test_without_a_limit_any_number_of_rows_passes() -> None:
    plan = InputPlan(TABULAR)
    assert plan.prepare({"input-0": np.zeros((100_000, 2))}).shape == (100_000, 2)  # type: ignore[attr-defined]


async def post(app: ASGIApp, path: str, body: bytes) -> tuple[int, Any]:
    """One request through the app in process: the status and the decoded JSON answer."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def infer_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return orjson.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]})


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[LocalGateway]:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings({"home": home, "max_rows": LIMIT}, env={})
    workspace = Workspace.open(settings)
    register(workspace, logistic, Registration(name="lr", reference_data=tabular_data[0][:100]))
    gateway = build_local_gateway(workspace, [parse_ref("lr")])
    yield gateway
    gateway.close()


async def test_the_hot_path_answers_413_naming_the_limit(
    gateway: LocalGateway,
    tabular_data: tuple[np.ndarray, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = load_settings({"home": tmp_path_factory.mktemp("unused")}, env={})
    app = create_app(settings, gateway, Authenticator(None))
    rows = tabular_data[0]

    status, fits = await post(app, "/v2/models/lr/infer", infer_body(rows[:LIMIT]))
    assert status == 200
    assert len(fits["outputs"][0]["data"]) == LIMIT
    error = {"error": f"request has {LIMIT + 1} rows; the limit is {LIMIT} (max_rows setting)"}
    assert await post(app, "/v2/models/lr/infer", infer_body(rows[: LIMIT + 1])) == (413, error)
    v1 = orjson.dumps({"instances": rows[: LIMIT + 1].tolist()})
    assert await post(app, "/v1/models/lr:predict", v1) == (413, error)
