"""A real ``dockyard serve`` process on free ports, spoken to as V2/V1 clients would: the V2 tests
run over every protocol (REST, gRPC with typed contents, gRPC with raw contents: ``speaker``) and
every backend (local, ray: ``backend``), the server answering REST and gRPC at once."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression

from dockyard.client import Client
from dockyard.errors import InvalidInput, NotFound
from dockyard.services.register import Registration, register
from homes import open_unprotected
from ray_cluster import foreign_connections, process_titles, tcp_connections
from servers import Server, descendants
from v2_speakers import GrpcSpeaker, Refused, RestSpeaker, Tensor

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
        running = Server(
            home, [*args, "--backend", "ray"], log, startup_timeout_s=RAY_START_S, grpc=True
        )
    else:
        running = Server(home, args, log, grpc=True)
    yield running
    running.stop()


Speaker = RestSpeaker | GrpcSpeaker


@pytest.fixture(params=["rest", "grpc-typed", "grpc-raw"])
def speaker(server: Server, request: pytest.FixtureRequest) -> Iterator[Speaker]:
    """The V2 client of one protocol: every V2 test of this file passes over each."""
    if request.param == "rest":
        yield RestSpeaker(server.url)
        return
    speaking = GrpcSpeaker(server.grpc_address, raw=request.param == "grpc-raw")
    yield speaking
    speaking.close()


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


def test_health_and_server_metadata(speaker: Speaker) -> None:
    assert speaker.live()
    assert speaker.ready()
    metadata = speaker.server_metadata()
    assert metadata["name"] == "dockyard"
    if speaker.protocol == "rest":  # the binary extension is REST's (gRPC has raw contents)
        assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_ready(speaker: Speaker) -> None:
    metadata = speaker.model_metadata("lr")
    assert metadata["name"] == "lr"
    assert metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "sklearn_skops"
    assert len(metadata["inputs"]) == 30
    assert metadata["inputs"][0] == {"name": "x0", "datatype": "FP64", "shape": [-1]}
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
    assert speaker.model_metadata("lr", "2")["versions"] == ["1", "2"]
    assert speaker.model_ready("lr", "2")


def test_infer_matches_in_process_prediction(
    speaker: Speaker, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:7]
    answer = speaker.infer("lr", [Tensor("input-0", rows)], request_id="req-42")
    assert answer.id == "req-42"
    assert answer.model_name == "lr"
    assert answer.model_version == "1"
    assert answer.outputs["predict"].tolist() == logistic.predict(rows).tolist()
    assert answer.outputs["predict_proba"].shape == (7, 2)
    np.testing.assert_allclose(answer.outputs["predict_proba"], logistic.predict_proba(rows))


def test_per_feature_inputs_and_requested_output(
    speaker: Speaker, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = tabular_data[0][:3]
    inputs = [Tensor(f"x{i}", np.ascontiguousarray(rows[:, i])) for i in range(30)]
    answer = speaker.infer("lr", inputs, version="2", outputs=["predict"])
    assert answer.model_version == "2"
    assert list(answer.outputs) == ["predict"]
    assert answer.outputs["predict"].tolist() == logistic.predict(rows).tolist()


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"], ids=["plain", "gzip", "deflate"])
def test_tritonclient_grpc_works_unchanged(
    server: Server,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    compression: str | None,
) -> None:
    rows = tabular_data[0][:5]
    client = triton_grpc.InferenceServerClient(url=server.grpc_address)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("lr")
        assert client.get_model_metadata("lr").name == "lr"
        tensor = triton_grpc.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        wanted = [triton_grpc.InferRequestedOutput(name) for name in ("predict", "predict_proba")]
        result = client.infer(
            "lr", [tensor], outputs=wanted, request_id="t-1", compression_algorithm=compression
        )
        assert result.get_response().id == "t-1"
        np.testing.assert_array_equal(result.as_numpy("predict"), logistic.predict(rows))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), logistic.predict_proba(rows))
    finally:
        client.close()


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


ROW = np.arange(30, dtype=np.float64).reshape(1, 30) / 30
NAN_ROW = ROW.copy()
NAN_ROW[0, 0] = np.nan
FEATURES = [Tensor(f"x{i}", np.zeros(1)) for i in range(31)]
BAD_INPUTS: list[tuple[str, str, dict[str, Any], tuple[int, str], str | dict[str, str]]] = [
    ("no-inputs", "lr", {"inputs": []}, (400, "INVALID_ARGUMENT"), "inputs"),
    (
        "wrong-shape",
        "lr",
        {"inputs": [Tensor("input-0", ROW, shape=[2, 30])]},
        (400, "INVALID_ARGUMENT"),
        "input-0",
    ),
    (
        "wrong-width",
        "lr",
        {"inputs": [Tensor("input-0", ROW[:, :29])]},
        (400, "INVALID_ARGUMENT"),
        "30",
    ),
    (
        "wrong-datatype",
        "lr",
        {"inputs": [Tensor("input-0", ROW, datatype="BOOL")]},
        (400, "INVALID_ARGUMENT"),
        "BOOL",
    ),
    (
        "unknown-datatype",
        "lr",
        {"inputs": [Tensor("input-0", ROW, datatype="FP128")]},
        (400, "INVALID_ARGUMENT"),
        "FP128",
    ),
    ("missing-feature", "lr", {"inputs": FEATURES[:29]}, (400, "INVALID_ARGUMENT"), "x29"),
    ("extra-feature", "lr", {"inputs": FEATURES}, (400, "INVALID_ARGUMENT"), "x30"),
    ("nan", "lr", {"inputs": [Tensor("input-0", NAN_ROW)]}, (400, "INVALID_ARGUMENT"), "NaN"),
    ("unknown-model", "nope", {"inputs": [Tensor("input-0", ROW)]}, (404, "NOT_FOUND"), "nope"),
    (
        "unknown-version",
        "lr",
        {"inputs": [Tensor("input-0", ROW)], "version": "9"},
        (404, "NOT_FOUND"),
        "9",
    ),
    (
        "unknown-output",
        "lr",
        {"inputs": [Tensor("input-0", ROW)], "outputs": ["bogus"]},
        (400, "INVALID_ARGUMENT"),
        "bogus",
    ),
    (
        "too-large",
        "lr",
        {"inputs": [Tensor("input-0", np.repeat(ROW, 1000, axis=0))]},
        (413, "RESOURCE_EXHAUSTED"),
        {"rest": "limit", "grpc-typed": "larger than max", "grpc-raw": "larger than max"},
    ),
]


@pytest.mark.parametrize(
    ("model", "request_", "status", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_a_clear_error_and_the_server_keeps_serving(
    server: Server,
    speaker: Speaker,
    model: str,
    request_: dict[str, Any],
    status: tuple[int, str],
    fragment: str | dict[str, str],
) -> None:
    with pytest.raises(Refused) as refused:
        speaker.infer(model, **request_)
    assert refused.value.status == speaker.expected(*status), refused.value.message
    wanted = fragment if isinstance(fragment, str) else fragment[speaker.protocol]
    assert wanted in refused.value.message
    assert "Traceback" not in refused.value.message
    assert speaker.infer("lr", [Tensor("input-0", ROW)]).model_name == "lr"
    _assert_serving(server, ROW)


BAD_REQUESTS: list[tuple[str, str, dict[str, str] | None, bytes, int, str]] = [
    ("malformed-json", "/v2/models/lr/infer", None, b'{"inputs": [', 400, "malformed JSON"),
    ("no-inputs", "/v2/models/lr/infer", None, b'{"id": "1"}', 400, "inputs"),
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
"""Requests only REST can get wrong (the bytes of the body; the V1 route)."""


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_http_request_is_a_clear_4xx_and_the_server_keeps_serving(
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
