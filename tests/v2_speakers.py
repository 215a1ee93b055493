"""One Open Inference Protocol client interface over REST (JSON) and gRPC (typed ``contents`` or
``raw_input_contents``), so the V2 end-to-end suite runs unchanged over every protocol.

The gRPC speakers use a stub of the module generated from Dockyard's ``grpc_predict_v2.proto``
(tritonclient.grpc is the other real client, in the tests that name it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np

from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc

NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
KINDS = {"b": "BOOL", "O": "BYTES"}


@dataclass
class Tensor:
    """An input: its values, and the datatype and shape declared for them (by default what the
    values are), which a test may declare wrongly on purpose."""

    name: str
    values: np.ndarray
    datatype: str = ""
    shape: list[int] | None = None

    def declared(self) -> tuple[str, list[int]]:
        datatype = self.datatype or _datatype(self.values)
        return datatype, list(self.values.shape) if self.shape is None else self.shape


@dataclass
class Inferred:
    model_name: str
    model_version: str
    id: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class Refused(Exception):
    """An error answer: ``status`` is the HTTP status (REST) or the status code's name (gRPC)."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RestSpeaker:
    protocol = "rest"

    def __init__(self, url: str) -> None:
        self.url = url

    def expected(self, http: int, code: str) -> int | str:
        return http

    def live(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/live").json() == {"live": True}

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/ready").json() == {"ready": True}

    def server_metadata(self) -> dict[str, Any]:
        return self._get("/v2")

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self._get(_path(name, version))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return bool(self._get(f"{_path(name, version)}/ready")["ready"])

    def infer(
        self,
        name: str,
        inputs: list[Tensor],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        request_id: str | None = None,
    ) -> Inferred:
        body: dict[str, Any] = {"inputs": [_json_input(tensor) for tensor in inputs]}
        if outputs is not None:
            body["outputs"] = [{"name": output} for output in outputs]
        if request_id is not None:
            body["id"] = request_id
        response = httpx.post(f"{self.url}{_path(name, version)}/infer", json=body)
        if response.status_code != 200:
            raise Refused(response.status_code, response.json()["error"])
        answer = response.json()
        return Inferred(
            answer["model_name"],
            answer.get("model_version", ""),
            answer.get("id", ""),
            {
                item["name"]: np.asarray(item["data"]).reshape(item["shape"])
                for item in answer["outputs"]
            },
        )

    def _get(self, path: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}{path}")
        if response.status_code != 200:
            raise Refused(response.status_code, response.json()["error"])
        answer: dict[str, Any] = response.json()
        return answer


class GrpcSpeaker:
    def __init__(self, address: str, *, raw: bool) -> None:
        self.raw = raw
        self.protocol = "grpc-raw" if raw else "grpc-typed"
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def expected(self, http: int, code: str) -> int | str:
        return code

    def live(self) -> bool:
        return bool(self._call(self._stub.ServerLive, pb.ServerLiveRequest()).live)

    def ready(self) -> bool:
        return bool(self._call(self._stub.ServerReady, pb.ServerReadyRequest()).ready)

    def server_metadata(self) -> dict[str, Any]:
        answer = self._call(self._stub.ServerMetadata, pb.ServerMetadataRequest())
        return {"name": answer.name, "version": answer.version, "extensions": [*answer.extensions]}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        request = pb.ModelMetadataRequest(name=name, version=version or "")
        answer = self._call(self._stub.ModelMetadata, request)

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": [*t.shape]} for t in items]

        return {
            "name": answer.name,
            "versions": [*answer.versions],
            "platform": answer.platform,
            "inputs": tensors(answer.inputs),
            "outputs": tensors(answer.outputs),
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        request = pb.ModelReadyRequest(name=name, version=version or "")
        return bool(self._call(self._stub.ModelReady, request).ready)

    def infer(
        self,
        name: str,
        inputs: list[Tensor],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        request_id: str | None = None,
    ) -> Inferred:
        request = pb.ModelInferRequest(
            model_name=name, model_version=version or "", id=request_id or ""
        )
        for tensor in inputs:
            datatype, shape = tensor.declared()
            added = request.inputs.add(name=tensor.name, datatype=datatype, shape=shape)
            if self.raw:
                request.raw_input_contents.append(_raw(tensor.values))
            else:
                values = tensor.values
                kind = _datatype(values)
                items = [_bytes(v) for v in values.ravel()] if kind == "BYTES" else values.ravel()
                getattr(added.contents, FIELDS[kind]).extend(list(items))
        for output in outputs or ():
            request.outputs.add(name=output)
        answer = self._call(self._stub.ModelInfer, request)
        decoded = {}
        for index, output in enumerate(answer.outputs):
            shape = [*output.shape]
            if answer.raw_output_contents:
                raw = answer.raw_output_contents[index]
                array = np.frombuffer(raw, dtype=NUMPY[output.datatype]).reshape(shape)
            else:
                values = getattr(output.contents, FIELDS[output.datatype])
                array = np.array(list(values)).reshape(shape)
            decoded[output.name] = array
        return Inferred(answer.model_name, answer.model_version, answer.id, decoded)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=30)
        except grpc.RpcError as exc:
            raise Refused(exc.code().name, exc.details() or "") from None


def _path(name: str, version: str | None) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def _datatype(values: np.ndarray) -> str:
    kind = KINDS.get(values.dtype.kind)
    if kind is not None:
        return kind
    return next(name for name, dtype in NUMPY.items() if np.dtype(dtype) == values.dtype)


def _json_input(tensor: Tensor) -> dict[str, Any]:
    datatype, shape = tensor.declared()
    data = tensor.values.ravel().tolist()
    if tensor.values.dtype.kind == "f":
        data = ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in data]
    elif tensor.values.dtype.kind == "O":
        data = [v.decode() if isinstance(v, bytes) else v for v in data]
    return {"name": tensor.name, "shape": shape, "datatype": datatype, "data": data}


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _raw(values: np.ndarray) -> bytes:
    if values.dtype.kind == "O":
        parts = [_bytes(v) for v in values.ravel()]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return values.astype(values.dtype.newbyteorder("<")).tobytes()
