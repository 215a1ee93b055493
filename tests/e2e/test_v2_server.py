"""A real ``dockyard serve`` process on a free port, spoken to over HTTP as V2/V1 clients would."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression

from dockyard.client import Client
from dockyard.errors import InvalidInput, NotFound
from dockyard.services.register import Registration, register
from homes import open_unprotected
from ray_cluster import foreign_connections, process_titles, tcp_connections
from servers import Server, descendants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]  # the first ray test starts its server
BODY_LIMIT = 200_000
RAY_START_S = 180.0
"""A Ray instance started and two applications deployed, on 2 cores shared with other tests."""


@pytest.fixture(scope="module", params=["local", "ray"])
def backend(request: pytest.FixtureRequest) -> str:
    """Where the server's models run: every test of this file passes on both backends."""
    chosen: str = request.param
    return chosen


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    backend: str,
) -> Iterator[Server]:
    """``lr@production`` and ``lr:2``. With the ray backend and no ``--ray-address``, the server
    starts a Ray instance of its own (the laptop default) and each version is a Ray Serve
    application of one replica (1 CPU each, of the instance's 2)."""
    home = tmp_path_factory.mktemp("home")
    workspace = open_unprotected(home)
    x, _ = tabular_data
    register(
        workspace, logistic, Registration(name="lr", reference_data=x[:200], alias="production")
    )
    register(workspace, logistic, Registration(name="lr", reference_data=x[:200], alias="staging"))
    log = tmp_path_factory.mktemp("logs") / "server.log"
    args = ["lr@production", "lr:2", "--max-body-bytes", str(BODY_LIMIT)]
    if backend == "ray":
        # The user's environment, not ray_env(): the server pins its Ray to loopback itself.
        running = Server(home, [*args, "--backend", "ray"], log, startup_timeout_s=RAY_START_S)
    else:
        running = Server(home, args, log)
    yield running
    running.stop()


def _matrix_body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.tolist(),
            }
        ],
        **extra,
    }


def _assert_serving(server: Server, rows: np.ndarray) -> None:
    response = httpx.post(f"{server.url}/v2/models/lr/infer", json=_matrix_body(rows))
    assert response.status_code == 200, response.text


def test_health_and_server_metadata(server: Server) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    metadata = httpx.get(f"{server.url}/v2").json()
    assert metadata["name"] == "dockyard"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_ready(server: Server) -> None:
    metadata = httpx.get(f"{server.url}/v2/models/lr").json()
    assert metadata["name"] == "lr"
    assert metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "sklearn_skops"
    assert len(metadata["inputs"]) == 30
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
    ready = httpx.get(f"{server.url}/v2/models/lr/versions/2/ready")
    assert ready.status_code == 200
    assert ready.json() == {"name": "lr", "ready": True}


def test_infer_matches_in_process_prediction(
    server: Server, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:7]
    response = httpx.post(f"{server.url}/v2/models/lr/infer", json=_matrix_body(rows, id="req-42"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-42"
    assert body["model_name"] == "lr"
    assert body["model_version"] == "1"
    outputs = {item["name"]: item for item in body["outputs"]}
    assert outputs["predict"]["data"] == logistic.predict(rows).tolist()
    assert outputs["predict_proba"]["shape"] == [7, 2]
    np.testing.assert_allclose(
        np.asarray(outputs["predict_proba"]["data"]).reshape(7, 2), logistic.predict_proba(rows)
    )


def test_per_feature_inputs_and_requested_output(
    server: Server, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:3]
    inputs = [
        {"name": f"x{i}", "shape": [3], "datatype": "FP64", "data": rows[:, i].tolist()}
        for i in range(30)
    ]
    response = httpx.post(
        f"{server.url}/v2/models/lr/versions/2/infer",
        json={"inputs": inputs, "outputs": [{"name": "predict"}]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "2"
    assert [o["name"] for o in body["outputs"]] == ["predict"]
    assert body["outputs"][0]["data"] == logistic.predict(rows).tolist()


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"], ids=["plain", "gzip", "deflate"])
def test_tritonclient_works_unchanged(
    server: Server,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    compression: str | None,
) -> None:
    rows = tabular_data[0][:5]
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("lr")
        assert client.get_model_metadata("lr")["name"] == "lr"
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=True)
        wanted = [
            triton.InferRequestedOutput("predict", binary_data=True),
            triton.InferRequestedOutput("predict_proba", binary_data=False),
        ]
        result = client.infer(
            "lr", [tensor], outputs=wanted, request_compression_algorithm=compression
        )
        np.testing.assert_array_equal(result.as_numpy("predict"), logistic.predict(rows))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), logistic.predict_proba(rows))
    finally:
        client.close()


def test_v1_predict_with_rows_and_records(
    server: Server, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:4]
    by_rows = httpx.post(f"{server.url}/v1/models/lr:predict", json={"instances": rows.tolist()})
    assert by_rows.status_code == 200, by_rows.text
    assert by_rows.json()["predictions"] == logistic.predict(rows).tolist()
    records = [{f"x{i}": float(value) for i, value in enumerate(row)} for row in rows]
    by_records = httpx.post(f"{server.url}/v1/models/lr:predict", json={"instances": records})
    assert by_records.status_code == 200, by_records.text
    assert by_records.json()["predictions"] == logistic.predict(rows).tolist()


def test_openapi_docs(server: Server) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/v2/models/{name}/infer" in paths
    assert "/v1/models/{name}:predict" in paths


def _row_tensor(rows: np.ndarray, **changes: Any) -> dict[str, Any]:
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.tolist(),
    }
    tensor.update(changes)
    return {"inputs": [tensor]}


ROW = np.arange(30, dtype=np.float64).reshape(1, 30) / 30
BAD_REQUESTS: list[tuple[str, str, dict[str, str] | None, bytes, int, str]] = [
    ("malformed-json", "/v2/models/lr/infer", None, b'{"inputs": [', 400, "malformed JSON"),
    ("no-inputs", "/v2/models/lr/infer", None, b'{"id": "1"}', 400, "inputs"),
    (
        "wrong-shape",
        "/v2/models/lr/infer",
        None,
        json.dumps(_row_tensor(ROW, shape=[2, 30])).encode(),
        400,
        "input-0",
    ),
    (
        "wrong-width",
        "/v2/models/lr/infer",
        None,
        json.dumps(_row_tensor(ROW[:, :29])).encode(),
        400,
        "30",
    ),
    (
        "wrong-datatype",
        "/v2/models/lr/infer",
        None,
        json.dumps(_row_tensor(ROW, datatype="BOOL")).encode(),
        400,
        "BOOL",
    ),
    (
        "unknown-datatype",
        "/v2/models/lr/infer",
        None,
        json.dumps(_row_tensor(ROW, datatype="FP128")).encode(),
        400,
        "FP128",
    ),
    (
        "missing-feature",
        "/v2/models/lr/infer",
        None,
        json.dumps(
            {
                "inputs": [
                    {"name": f"x{i}", "shape": [1], "datatype": "FP64", "data": [0.0]}
                    for i in range(29)
                ]
            }
        ).encode(),
        400,
        "x29",
    ),
    (
        "extra-feature",
        "/v2/models/lr/infer",
        None,
        json.dumps(
            {
                "inputs": [
                    {"name": f"x{i}", "shape": [1], "datatype": "FP64", "data": [0.0]}
                    for i in range(31)
                ]
            }
        ).encode(),
        400,
        "x30",
    ),
    (
        "nan",
        "/v2/models/lr/infer",
        None,
        json.dumps(_row_tensor(ROW, data=["NaN", *ROW[0, 1:].tolist()], shape=[1, 30])).encode(),
        400,
        "NaN",
    ),
    (
        "unknown-model",
        "/v2/models/nope/infer",
        None,
        json.dumps(_row_tensor(ROW)).encode(),
        404,
        "nope",
    ),
    (
        "unknown-version",
        "/v2/models/lr/versions/9/infer",
        None,
        json.dumps(_row_tensor(ROW)).encode(),
        404,
        "9",
    ),
    (
        "unknown-output",
        "/v2/models/lr/infer",
        None,
        json.dumps({**_row_tensor(ROW), "outputs": [{"name": "bogus"}]}).encode(),
        400,
        "bogus",
    ),
    (
        "too-large",
        "/v2/models/lr/infer",
        None,
        b"[" + b" " * (BODY_LIMIT + 10) + b"]",
        413,
        "limit",
    ),
    (
        "gzip-bomb",
        "/v2/models/lr/infer",
        {"Content-Encoding": "gzip"},
        gzip.compress(b" " * (BODY_LIMIT * 20)),
        413,
        "limit",
    ),
    ("bad-gzip", "/v2/models/lr/infer", {"Content-Encoding": "gzip"}, b"not gzip", 400, "gzip"),
    ("v1-not-instances", "/v1/models/lr:predict", None, b'{"rows": []}', 400, "instances"),
]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(
    server: Server,
    path: str,
    headers: dict[str, str] | None,
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers or {})
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert fragment in message
    assert "Traceback" not in response.text
    _assert_serving(server, ROW)


def test_unknown_route_is_json_404(server: Server) -> None:
    response = httpx.get(f"{server.url}/v2/nowhere/at/all")
    assert response.status_code == 404
    assert "error" in response.json()


def test_server_log_has_no_tracebacks_for_client_errors(server: Server, tmp_path: Path) -> None:
    httpx.post(f"{server.url}/v2/models/lr/infer", content=b"{")
    assert "Traceback" not in server.output()


def test_python_client(
    server: Server, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:3]
    with Client(server.url) as client:
        assert client.is_live()
        assert client.is_ready()
        assert client.server_metadata()["name"] == "dockyard"
        assert client.model_metadata("lr", version="2")["versions"] == ["1", "2"]
        outputs = client.infer("lr", rows, outputs=["predict"], request_id="c-1")
        np.testing.assert_array_equal(outputs["predict"], logistic.predict(rows))
        with pytest.raises(NotFound, match="nope"):
            client.infer("nope", rows)
        with pytest.raises(InvalidInput, match="input-0"):
            client.infer("lr", rows[:, :5])


def test_the_server_talks_over_loopback_only(server: Server, backend: str) -> None:
    """The ray backend's own Ray instance (its GCS, raylet, replicas: processes under the
    server's) keeps every connection on loopback, though the machine has another address; the
    local backend starts no Ray at all."""
    _assert_serving(server, ROW)
    processes = {server.process.pid} | descendants(server.process.pid)
    titles = " ".join(process_titles(processes).values())
    if backend == "ray":
        assert "gcs_server" in titles
        assert "raylet" in titles
        assert "ray::ServeReplica:dockyard-lr-v1:lr" in titles
        assert "ray::ServeReplica:dockyard-lr-v2:lr" in titles
        assert tcp_connections(processes - {server.process.pid})  # Ray's, between its processes
    else:
        assert "raylet" not in titles
        assert "ray::" not in titles
    assert foreign_connections(processes) == []
