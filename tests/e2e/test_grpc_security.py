"""gRPC with API keys and roles (UNAUTHENTICATED, PERMISSION_DENIED, the key in the call's metadata,
tritonclient.grpc's headers) and with mutual TLS (a client certificate the CA signed, refused
without one or in plain text), against real servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from certs import Pki, make_pki
from dockyard.security.principals import Role, local_user
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from homes import open_unprotected
from servers import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
ROW = np.arange(30, dtype=np.float64).reshape(1, 30) / 30


def _refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _assert_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="lr")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 30])
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    assert stub.ModelInfer(request).outputs[0].name == "predict"


@pytest.fixture
def secured(served: Path, tmp_path: Path) -> Iterator[Server]:
    running = Server(served, ["lr"], tmp_path / "secured.log", auth=True, grpc=True)
    yield running
    running.stop()


def _infer(stub: pb_grpc.GRPCInferenceServiceStub, metadata: list[tuple[str, str]]) -> Any:
    request = pb.ModelInferRequest(model_name="lr")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 30])
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    return stub.ModelInfer(request, metadata=metadata)


def test_keys_and_roles_over_grpc(secured: Server, served: Path) -> None:
    workspace = open_unprotected(served)
    _, predictor = workspace.keys.create(local_user(), "svc", Role.PREDICTOR, ["lr"])
    _, elsewhere = workspace.keys.create(local_user(), "churn", Role.PREDICTOR, ["churn"])
    _, auditor = workspace.keys.create(local_user(), "audit", Role.AUDITOR)
    channel = grpc.insecure_channel(secured.grpc_address)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # the probes need no key
        missing = _refusal(lambda: _infer(stub, []))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Authorization: Bearer" in missing.details()
        invalid = _refusal(lambda: _infer(stub, [("authorization", "Bearer dk_nope_nope")]))
        assert invalid.code() == grpc.StatusCode.UNAUTHENTICATED
        for key in (elsewhere, auditor):
            denied = _refusal(lambda key=key: _infer(stub, [("authorization", f"Bearer {key}")]))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, denied.details()
        metadata_refused = _refusal(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="lr")))
        assert metadata_refused.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = _infer(stub, [("authorization", f"Bearer {predictor}")])
        assert answer.model_name == "lr"
        assert _infer(stub, [("x-api-key", secured.admin_key)]).model_name == "lr"
        client = triton.InferenceServerClient(secured.grpc_address)
        try:
            headers = {"authorization": f"Bearer {predictor}"}
            assert client.is_model_ready("lr", headers=headers)
            tensor = triton.InferInput("input-0", [1, 30], "FP64")
            tensor.set_data_from_numpy(ROW)
            result = client.infer("lr", [tensor], headers=headers)
            assert result.as_numpy("predict").shape == (1,)
        finally:
            client.close()
    finally:
        channel.close()
    assert predictor not in secured.output()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_mutual_tls_over_grpc(served: Path, pki: Pki, tmp_path: Path) -> None:
    flags = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    flags += ["--tls-client-ca", str(pki.ca)]
    server = Server(
        served, ["lr", *flags], tmp_path / "tls.log", tls=pki.client_context(pki.client), grpc=True
    )
    try:
        trusted = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client.key.read_bytes(),
            certificate_chain=pki.client.cert.read_bytes(),
        )
        with grpc.secure_channel(server.grpc_address, trusted) as channel:
            _assert_serving(pb_grpc.GRPCInferenceServiceStub(channel))
        client = triton.InferenceServerClient(
            server.grpc_address,
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.client.key),
            certificate_chain=str(pki.client.cert),
        )
        try:
            assert client.is_server_ready()
        finally:
            client.close()
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(server.grpc_address, anonymous) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            refused = _refusal(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=5))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            refused = _refusal(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=5))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_a_key_over_its_rate_is_refused_with_resource_exhausted(
    served: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "DOCKYARD_RATE_LIMITS": "predictor=2/s"}
    server = Server(served, ["lr"], tmp_path / "rated.log", auth=True, grpc=True, env=env)
    try:
        workspace = open_unprotected(served)
        _, key = workspace.keys.create(local_user(), "svc", Role.PREDICTOR, ["lr"])
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            metadata = [("authorization", f"Bearer {key}")]
            errors = []
            for _ in range(8):
                try:
                    _infer(stub, metadata)
                except grpc.RpcError as exc:
                    errors.append(exc)
        assert errors, "8 calls at once passed a rate of 2/s"
        for error in errors:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate_limits predictor=2/s" in (error.details() or "")
            assert dict(error.trailing_metadata() or ()).get("retry-after")
    finally:
        server.stop()
