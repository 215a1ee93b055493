"""The gRPC codec: ``ModelInferRequest`` to the REST codec's ``InferRequest`` and outputs back, for
every datatype, typed and raw; and every error class's gRPC status."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from dockyard import errors
from dockyard.errors import DockyardError, InvalidInput
from dockyard.serving.grpc_codec import decode_request, encode_response, wants_raw
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.protocol import to_binary

TYPED = {
    "BOOL": ("bool_contents", np.array([[True, False]])),
    "UINT8": ("uint_contents", np.array([[0, 255]], dtype=np.uint8)),
    "UINT16": ("uint_contents", np.array([[0, 65535]], dtype=np.uint16)),
    "UINT32": ("uint_contents", np.array([[0, 2**32 - 1]], dtype=np.uint32)),
    "UINT64": ("uint64_contents", np.array([[0, 2**64 - 1]], dtype=np.uint64)),
    "INT8": ("int_contents", np.array([[-128, 127]], dtype=np.int8)),
    "INT16": ("int_contents", np.array([[-(2**15), 2**15 - 1]], dtype=np.int16)),
    "INT32": ("int_contents", np.array([[-(2**31), 2**31 - 1]], dtype=np.int32)),
    "INT64": ("int64_contents", np.array([[-(2**63), 2**63 - 1]], dtype=np.int64)),
    "FP32": ("fp32_contents", np.array([[-1.5, np.inf]], dtype=np.float32)),
    "FP64": ("fp64_contents", np.array([[np.nan, 1e300]])),
    "BYTES": ("bytes_contents", np.array([[b"a", b"\xff"]], dtype=object)),
}


def _typed_request(datatype: str) -> pb.ModelInferRequest:
    field, values = TYPED[datatype]
    request = pb.ModelInferRequest(model_name="m", id="r-1")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=values.shape)
    getattr(tensor.contents, field).extend(values.ravel().tolist())
    return request


@pytest.mark.parametrize("datatype", list(TYPED))
def test_typed_contents_decode_as_the_rest_codec_would(datatype: str) -> None:
    decoded = decode_request(_typed_request(datatype))
    _, values = TYPED[datatype]
    array = decoded.inputs["t"]
    assert array.dtype == values.dtype
    assert array.shape == values.shape
    np.testing.assert_array_equal(array, values)
    assert decoded.id == "r-1"
    assert not decoded.empty


@pytest.mark.parametrize("datatype", [*TYPED, "FP16"])
def test_raw_contents_decode_to_the_same_arrays(datatype: str) -> None:
    values = TYPED[datatype][1] if datatype != "FP16" else np.array([[1.5, -2]], dtype=np.float16)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="t", datatype=datatype, shape=values.shape)
    request.raw_input_contents.append(to_binary(values, datatype))
    decoded = decode_request(request)
    np.testing.assert_array_equal(decoded.inputs["t"], values)
    assert wants_raw(request, decoded)


def test_bf16_arrives_raw_and_widens_to_float32() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="t", datatype="BF16", shape=[2])
    request.raw_input_contents.append(bytes.fromhex("c03f00c0"))  # the upper halves of float32
    decoded = decode_request(request)
    assert decoded.inputs["t"].tolist() == [1.5, -2.0]


def test_parameters_and_requested_outputs() -> None:
    request = _typed_request("FP64")
    request.parameters["priority"].int64_param = 2
    request.parameters["tag"].string_param = "x"
    request.outputs.add(name="a")
    request.outputs.add(name="b").parameters["binary_data"].bool_param = True
    decoded = decode_request(request)
    assert decoded.parameters == {"priority": 2, "tag": "x"}
    assert [(o.name, o.binary) for o in decoded.outputs] == [("a", False), ("b", True)]
    assert wants_raw(request, decoded)
    assert not wants_raw(_typed_request("FP64"), decode_request(_typed_request("FP64")))


def _broken(change: Any) -> pb.ModelInferRequest:
    request = _typed_request("FP64")
    change(request)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ModelInferRequest(model_name="m"), "request has no 'inputs'"),
        (_broken(lambda r: setattr(r.inputs[0], "datatype", "FP8")), "unknown datatype 'FP8'"),
        (_broken(lambda r: r.inputs[0].shape.append(2)), "shape [1, 2, 2] needs 4 values, got 2"),
        (
            _broken(lambda r: setattr(r.inputs[0], "datatype", "INT64")),
            "declared INT64, whose values go in contents.int64_contents, but the data is in "
            "contents.fp64_contents",
        ),
        (_broken(lambda r: r.inputs.add(name="t", datatype="FP64")), "duplicate input name 't'"),
        (_broken(lambda r: setattr(r.inputs[0], "name", "")), "input #0 has no 'name'"),
        (
            _broken(lambda r: r.raw_input_contents.append(b"")),
            "input 't': has 'contents' and the request has raw_input_contents",
        ),
        (
            _broken(lambda r: setattr(r.parameters["binary_data_output"], "int64_param", 1)),
            "binary_data_output must be a bool_param",
        ),
        (
            _broken(lambda r: setattr(r.inputs[0], "datatype", "FP16")),
            "FP16 has no typed 'contents' field",
        ),
        (
            _broken(lambda r: r.outputs.add(name="a") and r.outputs.add(name="a")),
            "duplicate output",
        ),
    ],
    ids=[
        "no-inputs",
        "unknown-datatype",
        "short-data",
        "wrong-field",
        "duplicate-input",
        "no-name",
        "raw-and-typed",
        "binary-output-not-bool",
        "fp16-typed",
        "duplicate-output",
    ],
)
def test_bad_requests_are_invalid_input_naming_the_problem(
    request_: pb.ModelInferRequest, message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        decode_request(request_)
    assert message in raised.value.message


def test_narrow_integers_out_of_range_are_refused() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="t", datatype="INT8", shape=[1]).contents.int_contents.append(128)
    with pytest.raises(InvalidInput, match=r"out of range for INT8 \(-128\.\.127\)"):
        decode_request(request)


def test_outputs_go_typed_or_raw_never_mixed() -> None:
    outputs = {
        "label": np.array([1, 0]),
        "p": np.array([[0.2, 0.8], [0.9, 0.1]]),
        "s": np.array(["é", "b"], dtype=object),
    }
    typed = encode_response(
        model_name="m", model_version="3", request_id="r", outputs=outputs, raw=False
    )
    assert (typed.model_name, typed.model_version, typed.id) == ("m", "3", "r")
    assert not typed.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in typed.outputs] == [
        ("label", "INT64", [2]),
        ("p", "FP64", [2, 2]),
        ("s", "BYTES", [2]),
    ]
    assert list(typed.outputs[0].contents.int64_contents) == [1, 0]
    assert list(typed.outputs[2].contents.bytes_contents) == ["é".encode(), b"b"]
    raw = encode_response(
        model_name="m", model_version="3", request_id=None, outputs=outputs, raw=True
    )
    assert raw.id == ""
    assert len(raw.raw_output_contents) == 3
    assert not any(o.HasField("contents") for o in raw.outputs)
    np.testing.assert_array_equal(
        np.frombuffer(raw.raw_output_contents[1]).reshape(2, 2), outputs["p"]
    )
    half = encode_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"h": np.array([1.5], dtype=np.float16), "i": np.array([1])},
        raw=False,
    )
    assert len(half.raw_output_contents) == 2  # FP16 has no typed field: every output goes raw


def test_every_error_class_names_a_grpc_status_code() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    for cls in classes:
        assert issubclass(cls, DockyardError)
        assert grpc.StatusCode[cls.grpc_status], cls
    assert errors.Overloaded.grpc_status == "RESOURCE_EXHAUSTED"
    assert errors.NotReady.grpc_status == "UNAVAILABLE"
    assert errors.PredictionTimeout.grpc_status == "DEADLINE_EXCEEDED"
