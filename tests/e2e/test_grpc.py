"""The Open Inference Protocol over gRPC against a real server of two workers: tritonclient.grpc
and a stub from the generated module, every datatype raw and typed, binary outputs, deadlines,
shedding, the message cap, metrics by protocol, the prediction log. (Keys, roles and TLS:
``test_grpc_security.py``; the V2 suite every protocol shares: ``test_v2_server.py``.)"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.linear_model import LogisticRegression
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_grpc_stub

from dockyard.errors import Unavailable
from dockyard.home import Home
from dockyard.monitoring.predlog import read_predictions
from dockyard.services.register import Registration, register
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from homes import open_unprotected
from servers import Server, dockyard_command, free_port
from v2_speakers import FIELDS, NUMPY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
BODY_LIMIT = 200_000
ECHO_SOURCE = """
import time


def echo(tensors):
    return {f"out_{name}": value for name, value in tensors.items()}


def slow(x):
    time.sleep(1.0)
    return {"y": x}
"""
DTYPES = {**NUMPY, "BYTES": np.object_}
ROW = np.arange(30, dtype=np.float64).reshape(1, 30) / 30


def _tensors(datatypes: Iterator[str] | list[str], rows: int = 2) -> dict[str, np.ndarray]:
    """One tensor per datatype, named after it, holding values at the edges of its range."""
    tensors: dict[str, np.ndarray] = {}
    for datatype in datatypes:
        dtype = DTYPES[datatype]
        if datatype == "BYTES":
            values = np.array([[b"a", b"", "\u00e9".encode()]] * rows, dtype=object)
        elif datatype == "BOOL":
            values = np.array([[True, False, True]] * rows)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = np.array([[info.min, 0, info.max]] * rows, dtype=dtype)
        else:
            values = np.array([[-1.5, 0.0, 65504.0]] * rows, dtype=dtype)
        tensors[datatype.lower()] = values
    return tensors


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Path:
    """``lr`` (30 FP64 features), ``echo`` (a tensor of every datatype, echoed), ``typed`` (the
    same without FP16, which has no typed field) and ``slow`` (a second a batch)."""
    home = tmp_path_factory.mktemp("home")
    workspace = open_unprotected(home)
    code = tmp_path_factory.mktemp("code")
    (code / "models.py").write_text(ECHO_SOURCE)
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="production"),
    )
    reference = _tensors(list(DTYPES), rows=4)
    register(
        workspace, code, Registration("echo", reference_data=reference, entrypoint="models:echo")
    )
    typed = {name: value for name, value in reference.items() if name != "fp16"}
    register(workspace, code, Registration("typed", reference_data=typed, entrypoint="models:echo"))
    slow = Registration("slow", reference_data=np.ones((2, 3)), entrypoint="models:slow")
    register(workspace, code, slow)
    return home


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers, both serving gRPC on one port; the slow model sheds past one queued row."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    args = ["lr", "echo", "typed", "slow", "--workers", "2", "--max-body-bytes", str(BODY_LIMIT)]
    args += ["--model-option", "slow.max_queue=1", "--model-option", "slow.batching=false"]
    running = Server(home, args, log, grpc=True)
    yield running
    running.stop()


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _assert_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="lr")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 30])
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    assert stub.ModelInfer(request).outputs[0].name == "predict"


def _refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_tritonclient_grpc_every_datatype_raw(server: Server) -> None:
    tensors = _tensors(list(DTYPES))
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("echo")
        metadata = client.get_model_metadata("echo")
        assert {tensor.datatype for tensor in metadata.inputs} == set(DTYPES)
        inputs = []
        for name, values in tensors.items():
            tensor = triton.InferInput(name, list(values.shape), name.upper())
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        result = client.infer("echo", inputs, request_id="every-type")
        assert result.get_response().id == "every-type"
        assert result.get_response().model_version == "1"
        for name, values in tensors.items():
            echoed = result.as_numpy(f"out_{name}")
            assert echoed.dtype == values.dtype, name
            np.testing.assert_array_equal(echoed, values)
    finally:
        client.close()


def test_generated_stub_every_typed_datatype(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    tensors = _tensors([datatype for datatype in DTYPES if datatype != "FP16"])
    request = pb.ModelInferRequest(model_name="typed", id="typed-1")
    request.parameters["priority"].int64_param = 1
    for name, values in tensors.items():
        datatype = name.upper()
        tensor = request.inputs.add(name=name, datatype=datatype, shape=values.shape)
        getattr(tensor.contents, FIELDS[datatype]).extend(values.ravel().tolist())
    request.outputs.add(name="out_int8")
    request.outputs.add(name="out_bytes")
    request.outputs.add(name="out_uint64")
    response = stub.ModelInfer(request)
    assert response.id == "typed-1"
    assert response.model_name == "typed"
    assert not response.raw_output_contents  # typed in, typed out
    assert [output.name for output in response.outputs] == ["out_int8", "out_bytes", "out_uint64"]
    by_name = {output.name: output for output in response.outputs}
    assert list(by_name["out_int8"].contents.int_contents) == [-128, 0, 127] * 2
    assert list(by_name["out_bytes"].contents.bytes_contents) == [b"a", b"", "\u00e9".encode()] * 2
    assert list(by_name["out_uint64"].contents.uint64_contents) == [0, 0, 2**64 - 1] * 2
    assert list(by_name["out_int8"].shape) == [2, 3]

    request.parameters["binary_data_output"].bool_param = True
    raw = stub.ModelInfer(request)
    assert len(raw.raw_output_contents) == 3
    assert not raw.outputs[0].HasField("contents")
    assert np.frombuffer(raw.raw_output_contents[0], dtype=np.int8).tolist() == [-128, 0, 127] * 2


def test_tritonclient_stubs_with_typed_contents(server: Server) -> None:
    """Triton's own generated messages and stub (``tritonclient.grpc.service_pb2``), typed
    contents in and out: the wire format is the protocol's, not only this project's."""
    tensors = _tensors([datatype for datatype in DTYPES if datatype != "FP16"])
    request = triton_pb.ModelInferRequest(model_name="typed", id="triton-typed")
    for name, values in tensors.items():
        datatype = name.upper()
        tensor = request.inputs.add(name=name, datatype=datatype, shape=values.shape)
        getattr(tensor.contents, FIELDS[datatype]).extend(values.ravel().tolist())
    with grpc.insecure_channel(server.grpc_address) as channel:
        response = triton_grpc_stub.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "triton-typed"
    assert not response.raw_output_contents
    for output in response.outputs:
        expected = tensors[output.name.removeprefix("out_")]
        values = list(getattr(output.contents, FIELDS[output.datatype]))
        assert list(output.shape) == list(expected.shape)
        assert values == expected.ravel().tolist(), output.name


def test_fp16_goes_raw_both_ways(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    tensors = _tensors(list(DTYPES))
    request = pb.ModelInferRequest(model_name="echo")
    for name, values in tensors.items():
        datatype = name.upper()
        tensor = request.inputs.add(name=name, datatype=datatype, shape=values.shape)
        if datatype != "FP16":
            getattr(tensor.contents, FIELDS[datatype]).extend(values.ravel().tolist())
    refused = _refusal(lambda: stub.ModelInfer(request))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'fp16': FP16 has no typed 'contents' field" in refused.details()


BAD: list[tuple[str, Callable[[pb.ModelInferRequest], None], grpc.StatusCode, str]] = [
    ("no-inputs", lambda r: r.ClearField("inputs"), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
    (
        "wrong-shape",
        lambda r: r.inputs[0].shape.__setitem__(0, 2),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape [2, 30] needs 60 values, got 30",
    ),
    (
        "wrong-datatype",
        lambda r: setattr(r.inputs[0], "datatype", "INT64"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "contents.fp64_contents",
    ),
    (
        "unknown-datatype",
        lambda r: setattr(r.inputs[0], "datatype", "FP128"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FP128",
    ),
    (
        "missing-input",
        lambda r: setattr(r.inputs[0], "name", "x0"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "missing inputs 'x1'",
    ),
    (
        "raw-and-typed",
        lambda r: r.raw_input_contents.append(b"\0" * 240),
        grpc.StatusCode.INVALID_ARGUMENT,
        "use one or the other",
    ),
    (
        "raw-count",
        lambda r: (r.inputs[0].ClearField("contents"), r.raw_input_contents.extend([b"", b""])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    (
        "unknown-model",
        lambda r: setattr(r, "model_name", "nope"),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    ),
    (
        "unknown-version",
        lambda r: setattr(r, "model_version", "9"),
        grpc.StatusCode.NOT_FOUND,
        "9",
    ),
    (
        "unknown-output",
        lambda r: r.outputs.add(name="bogus"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bogus",
    ),
    (
        "oversize-message",
        lambda r: r.inputs[0].contents.fp64_contents.extend([0.0] * 30_000),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
]


@pytest.mark.parametrize(
    ("change", "code", "fragment"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_input_gets_its_status_code_and_the_server_keeps_serving(
    server: Server,
    stub: pb_grpc.GRPCInferenceServiceStub,
    change: Callable[[pb.ModelInferRequest], None],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    request = pb.ModelInferRequest(model_name="lr")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 30])
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    change(request)
    refused = _refusal(lambda: stub.ModelInfer(request))
    assert refused.code() == code, refused.details()
    assert fragment in refused.details()
    assert "Traceback" not in refused.details()
    _assert_serving(stub)
    for client_error in ("InvalidInput", "SignatureMismatch", "NotFound"):
        assert f"dockyard.errors.{client_error}" not in server.output()  # no traceback logged


def test_metadata_ready_and_unknown_models(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "dockyard"
    assert stub.ModelReady(pb.ModelReadyRequest(name="lr", version="1")).ready
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="lr"))
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        "lr",
        ["1"],
        "sklearn_skops",
    )
    assert [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs[:1]] == [
        ("x0", "FP64", [-1])
    ]
    for call in (
        lambda: stub.ModelReady(pb.ModelReadyRequest(name="nope")),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")),
    ):
        refused = _refusal(call)
        assert refused.code() == grpc.StatusCode.NOT_FOUND
        assert "'nope'" in refused.details()


def test_a_grpc_deadline_is_honoured_and_load_is_shed(
    server: Server, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    def slow(timeout: float) -> pb.ModelInferResponse:
        request = pb.ModelInferRequest(model_name="slow")
        tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 3])
        tensor.contents.fp64_contents.extend([1.0, 2.0, 3.0])
        response: pb.ModelInferResponse = stub.ModelInfer(request, timeout=timeout)
        return response

    started = time.monotonic()
    late = _refusal(lambda: slow(0.3))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9
    time.sleep(1.0)  # the call the deadline ended still runs its second on the model's thread

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(slow, 30) for _ in range(8)]
        errors = [call.exception() for call in calls]
    outcomes = ["ok" if error is None else error.code().name for error in errors]
    shed = [error for error in errors if isinstance(error, grpc.RpcError)]
    for error in shed:
        assert "overloaded" in error.details()
        assert ("retry-after", "1") in (error.trailing_metadata() or ())
    assert "ok" in outcomes
    assert "RESOURCE_EXHAUSTED" in outcomes
    assert set(outcomes) <= {"ok", "RESOURCE_EXHAUSTED"}
    _assert_serving(stub)


def test_metrics_count_grpc_calls_by_protocol(
    server: Server, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    _assert_serving(stub)
    wanted = 'dockyard_requests_total{model="lr",route="grpc",status="200",version="1"}'
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if wanted in text:
            break
        time.sleep(0.2)
    assert wanted in text
    assert 'route="grpc",status="404"' in text or "nope" not in text


def test_grpc_calls_are_in_the_prediction_log(
    server: Server, stub: pb_grpc.GRPCInferenceServiceStub, home: Path
) -> None:
    request = pb.ModelInferRequest(model_name="lr", id="logged-over-grpc")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[2, 30])
    tensor.contents.fp64_contents.extend(np.repeat(ROW, 2, axis=0).ravel().tolist())
    stub.ModelInfer(request, metadata=[("x-request-id", "grpc-log-1")])

    def logged() -> list[tuple[str, int]]:
        table = read_predictions(Home(home), "lr", columns=["request_id", "row"])
        pairs = zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True)
        return [pair for pair in pairs if pair[0] == "grpc-log-1"]

    deadline = time.monotonic() + 15
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(logged()) == [("grpc-log-1", 0), ("grpc-log-1", 1)]


def test_a_taken_grpc_port_is_one_line_and_exit_7(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*dockyard_command(), "serve", "lr", "--port", str(free_port())]
            + ["--grpc-port", str(port)],
            env={**os.environ, "DOCKYARD_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == Unavailable.exit_code == 7
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_stopping_server_finishes_the_grpc_calls_it_holds(home: Path, tmp_path: Path) -> None:
    server = Server(home, ["slow", "--workers", "1"], tmp_path / "stopping.log", grpc=True)
    try:
        request = pb.ModelInferRequest(model_name="slow")
        tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 3])
        tensor.contents.fp64_contents.extend([1.0, 2.0, 3.0])
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            held = stub.ModelInfer.future(request, timeout=30)
            time.sleep(0.3)  # the call is in the model's second
            server.process.terminate()
            assert list(held.result().outputs[0].contents.fp64_contents) == [1.0, 2.0, 3.0]
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
