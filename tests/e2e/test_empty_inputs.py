"""Empty batches and absurd shapes over real HTTP: empty outputs or a 400 naming the input.

One real server serves a scikit-learn matrix model, an XGBoost model, a scikit-learn pipeline
over a DataFrame (one tensor per feature, one of them text) and an ONNX tensor model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
import xgboost
from skl2onnx import to_onnx
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server

pytestmark = pytest.mark.e2e
RNG = np.random.default_rng(9)
X = RNG.normal(size=(200, 4))
Y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
HEADER_LENGTH = "Inference-Header-Content-Length"
BIG = 2**63 - 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    frame = pd.DataFrame({"size": X[:, 0], "colour": np.array(["red", "blue"] * 100)})
    pipeline = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
        LogisticRegression(),
    ).fit(frame, Y)
    linear = LogisticRegression().fit(X.astype(np.float32), Y)
    models: list[tuple[Any, Registration]] = [
        (LogisticRegression().fit(X, Y), Registration("lr", reference_data=X)),
        (
            xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y),
            Registration("xgb", reference_data=X),
        ),
        (pipeline, Registration("mixed", reference_data=frame)),
        (
            to_onnx(linear, X[:1].astype(np.float32), options={"zipmap": False}),
            Registration("onnx", reference_data=X.astype(np.float32)),
        ),
    ]
    for model, registration in models:
        register(workspace, model, registration)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    running = Server(home, ["lr:1", "xgb:1", "mixed:1", "onnx:1"], log)
    yield running
    running.stop()


def _metadata(server: Server, name: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v2/models/{name}")
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()
    return metadata


def _no_rows(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Each input of the model as a V2 tensor with no rows."""
    inputs = []
    for spec in metadata["inputs"]:
        shape = [0, *(max(dim, 0) for dim in spec["shape"][1:])]
        inputs.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"]})
    return inputs


def _assert_empty_outputs(outputs: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
    """One output per signature output, each typed as the signature says and without rows."""
    expected = {spec["name"]: spec for spec in metadata["outputs"]}
    assert [output["name"] for output in outputs] == list(expected)
    for output in outputs:
        spec = expected[output["name"]]
        assert output["datatype"] == spec["datatype"]
        assert output["shape"] == [0, *(max(dim, 0) for dim in spec["shape"][1:])]
        assert output["data"] == []


@pytest.mark.parametrize(
    ("name", "layout"),
    [("lr", "matrix"), ("xgb", "matrix"), ("mixed", "columns"), ("onnx", "tensor")],
    ids=["sklearn", "xgboost", "sklearn-dataframe", "onnx"],
)
def test_v2_json_empty_batch_answers_outputs_without_rows(
    server: Server, name: str, layout: str
) -> None:
    metadata = _metadata(server, name)
    if layout == "matrix":
        width = len(metadata["inputs"])
        inputs = [{"name": "input-0", "shape": [0, width], "datatype": "FP64", "data": []}]
    else:
        inputs = [{**item, "data": []} for item in _no_rows(metadata)]
    response = httpx.post(f"{server.url}/v2/models/{name}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    _assert_empty_outputs(response.json()["outputs"], metadata)


def test_v2_binary_empty_batch_through_tritonclient(server: Server) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input-0", [0, 4], "FP64")
        tensor.set_data_from_numpy(np.empty((0, 4)), binary_data=True)
        wanted = [
            triton.InferRequestedOutput("predict_proba", binary_data=True),
            triton.InferRequestedOutput("predict", binary_data=False),
        ]
        result = client.infer("lr", [tensor], outputs=wanted)
        assert result.as_numpy("predict_proba").shape == (0, 2)
        assert result.as_numpy("predict_proba").dtype == np.float64
        assert result.as_numpy("predict").shape == (0,)
    finally:
        client.close()


@pytest.mark.parametrize("name", ["lr", "mixed", "onnx"], ids=["sklearn", "dataframe", "onnx"])
def test_v1_no_instances_answers_no_predictions(server: Server, name: str) -> None:
    response = httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": []})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == []


def _binary(shape: list[Any], raw: bytes = b"", datatype: str = "FP64") -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


def _json(shape: list[Any], data: list[Any] | None = None) -> tuple[bytes, None]:
    body = {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": data or []}]}
    return json.dumps(body).encode(), None


ABSURD = [  # (id, body and header length, what the message says after the input's name)
    ("json-zero-rows-huge-width", _json([0, BIG]), "is too large for any array"),
    ("json-huge-rows-zero-width", _json([BIG + 1, 0]), "is too large for any array"),
    ("binary-zero-rows-huge-width", _binary([0, BIG]), "is too large for any array"),
    ("binary-bytes-huge", _binary([0, BIG], datatype="BYTES"), "is too large for any array"),
    ("json-negative-dim", _json([-1, 4]), "shape must be a list of non-negative integers"),
    ("binary-negative-dim", _binary([0, -4]), "shape must be a list of non-negative integers"),
    ("json-product-past-int64", _json([2**32, 2**32], [1.0]), "needs 18446744073709551616"),
    ("binary-product-past-int64", _binary([2**32, 2**32]), "of FP64 needs"),
    ("json-zero-rows-with-data", _json([0, 4], [1.0, 2.0]), "needs 0 values, got 2"),
    ("binary-zero-rows-with-data", _binary([0, 4], b"\0" * 16), "needs 0 bytes"),
    ("json-rows-without-data", _json([2, 4]), "needs 8 values, got 0"),
    ("json-zero-width", _json([3, 0]), "expected one [N, 4] tensor"),
]


@pytest.mark.parametrize(
    ("body", "header_length", "fragment"),
    [(*case[1], case[2]) for case in ABSURD],
    ids=[case[0] for case in ABSURD],
)
def test_absurd_shapes_are_a_400_naming_the_input(
    server: Server, body: bytes, header_length: int | None, fragment: str
) -> None:
    headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
    response = httpx.post(f"{server.url}/v2/models/lr/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith("input 'input-0'"), message
    assert fragment in message


def test_a_tensor_empty_beyond_the_batch_is_a_400(server: Server) -> None:
    metadata = _metadata(server, "onnx")
    (spec,) = metadata["inputs"]
    shaped = {"name": spec["name"], "datatype": "FP32", "data": []}
    response = httpx.post(
        f"{server.url}/v2/models/onnx/infer", json={"inputs": [{**shaped, "shape": [2, 0]}]}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"input {spec['name']!r}")


def test_the_log_has_no_tracebacks(server: Server) -> None:
    body, _ = _json([0, 4])
    assert httpx.post(f"{server.url}/v2/models/lr/infer", content=body).status_code == 200
    assert "Traceback" not in server.output()
