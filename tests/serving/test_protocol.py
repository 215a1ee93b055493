"""The V2 wire codec: round trips, real tritonclient bodies, and every refusal's message."""

from __future__ import annotations

import re
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dockyard.errors import InvalidInput, PredictionFailed
from dockyard.serving.protocol import (
    RequestedOutput,
    decode_infer,
    encode_error,
    encode_infer,
)

JSON_DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


def request(*inputs: Any, **fields: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **fields})


def tensor(name: str = "x", shape: Any = (2,), datatype: str = "FP32", data: Any = (1, 2)) -> Any:
    item: dict[str, Any] = {"name": name, "shape": list(shape), "datatype": datatype}
    if data is not None:
        item["data"] = list(data)
    return item


def parse_response(body: bytes, header_length: int | None) -> Any:
    return triton.InferenceServerClient.parse_response_body(body, header_length=header_length)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(sorted(JSON_DATATYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    if datatype == "BYTES":
        elements: st.SearchStrategy[Any] = TEXT
    elif datatype.startswith("FP"):
        width = JSON_DATATYPES[datatype].itemsize * 8
        elements = st.floats(width=width, allow_nan=False, allow_infinity=False)
    else:
        elements = hnp.from_dtype(JSON_DATATYPES[datatype])
    array = draw(hnp.arrays(JSON_DATATYPES[datatype], shape, elements=elements))
    return datatype, array


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors(), st.sampled_from(["nested", "flat"]), st.booleans())
def test_json_tensors_round_trip(
    drawn: tuple[str, np.ndarray], layout: str, binary_output: bool
) -> None:
    datatype, array = drawn
    data = array.tolist() if layout == "nested" and array.ndim else array.ravel().tolist()
    body = request(tensor("t", array.shape, datatype, data), id="r1")

    decoded = decode_infer(body)
    assert list(decoded.inputs) == ["t"]
    received = decoded.inputs["t"]
    assert received.shape == array.shape
    assert received.dtype == JSON_DATATYPES[datatype]
    np.testing.assert_array_equal(received, array)

    response, header_length = encode_infer(
        model_name="m",
        model_version="1",
        request_id=decoded.id,
        outputs=decoded.inputs,
        binary={"t"} if binary_output else (),
    )
    assert (header_length is not None) == binary_output
    header = orjson.loads(response[:header_length] if header_length else response)
    (output,) = header["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "t",
        datatype,
        list(array.shape),
    )
    assert header["id"] == "r1"
    result = parse_response(response, header_length).as_numpy("t")
    if datatype == "BYTES" and binary_output:
        result = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(result)
    assert result.shape == array.shape
    np.testing.assert_array_equal(result.astype(array.dtype), array)


@settings(max_examples=150, deadline=None)
@given(tensors(), st.booleans())
def test_tritonclient_binary_inputs_decode_unchanged(
    drawn: tuple[str, np.ndarray], binary_input: bool
) -> None:
    datatype, array = drawn
    sent = array
    if datatype == "BYTES":
        sent = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
        sent = sent.reshape(array.shape)
    infer_input = triton.InferInput("t", list(array.shape), datatype)
    infer_input.set_data_from_numpy(sent, binary_data=binary_input)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [infer_input], request_id="42"
    )

    decoded = decode_infer(body, header_length)
    received = decoded.inputs["t"]
    assert decoded.id == "42"
    assert decoded.binary_output is True  # tritonclient asks for binary when no outputs are named
    assert received.shape == array.shape
    expected = sent if binary_input else array
    np.testing.assert_array_equal(received, expected)
    if binary_input:
        assert received.flags.writeable
        assert received.flags.aligned


def test_tritonclient_mixed_binary_and_json_inputs_with_requested_outputs() -> None:
    pixels = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[True, False]])
    names = np.array([b"a\x00b", b"\xff"], dtype=object)
    halves = np.array([0.5, -2.0], dtype=np.float16)
    brain = np.array([1.5, -3.0, 0.0], dtype=ml_dtypes.bfloat16)
    inputs = []
    for name, array, datatype, binary in [
        ("pixels", pixels, "FP32", True),
        ("mask", mask, "BOOL", False),
        ("names", names, "BYTES", True),
        ("halves", halves, "FP16", True),
        ("brain", brain, "BF16", True),
    ]:
        item = triton.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    outputs = [
        triton.InferRequestedOutput("y", binary_data=False),
        triton.InferRequestedOutput("z", binary_data=True),
    ]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, parameters={"tenant": "a"}
    )

    decoded = decode_infer(body, header_length)

    assert list(decoded.inputs) == ["pixels", "mask", "names", "halves", "brain"]
    np.testing.assert_array_equal(decoded.inputs["pixels"], pixels)
    np.testing.assert_array_equal(decoded.inputs["mask"], mask)
    assert decoded.inputs["names"].tolist() == [b"a\x00b", b"\xff"]
    np.testing.assert_array_equal(decoded.inputs["halves"], halves)
    assert decoded.inputs["brain"].dtype == np.float32
    np.testing.assert_array_equal(decoded.inputs["brain"], [1.5, -3.0, 0.0])
    assert decoded.outputs == (RequestedOutput("y", False), RequestedOutput("z", True))
    assert decoded.binary_output is False
    assert decoded.parameters == {"tenant": "a"}
    assert decoded.id is None


def test_encode_binary_outputs_read_by_tritonclient() -> None:
    outputs = {
        "probabilities": np.array([[0.25, 0.75]], dtype=np.float64)[:, ::-1],  # not contiguous
        "labels": np.array(["yes", b"\xff\x00"], dtype=object),
        "flags": np.array([True, False]),
        "big": np.array([1, 2], dtype=">i8"),
    }
    body, header_length = encode_infer(
        model_name="m",
        model_version=None,
        request_id=None,
        outputs=outputs,
        binary={"probabilities", "labels", "flags", "big"},
    )
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert "model_version" not in header
    assert "id" not in header
    result = parse_response(body, header_length)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), [[0.75, 0.25]])
    assert result.as_numpy("labels").tolist() == [b"yes", b"\xff\x00"]
    np.testing.assert_array_equal(result.as_numpy("flags"), [True, False])
    np.testing.assert_array_equal(result.as_numpy("big"), [1, 2])


def test_encode_json_outputs_header_fields_and_special_floats() -> None:
    body, header_length = encode_infer(
        model_name="fraud",
        model_version="3",
        request_id="abc",
        outputs={
            "score": np.array([[1.0, np.nan], [np.inf, -np.inf]], dtype=np.float32),
            "label": np.array([b"ok", "fine"], dtype=object),
            "scalar": np.int64(7),
        },
        parameters={"elapsed_ms": 3},
    )
    assert header_length is None
    response = orjson.loads(body)
    assert response["model_name"] == "fraud"
    assert response["model_version"] == "3"
    assert response["id"] == "abc"
    assert response["parameters"] == {"elapsed_ms": 3}
    score, label, scalar = response["outputs"]
    assert score == {
        "name": "score",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [1.0, "NaN", "Infinity", "-Infinity"],
    }
    assert label["data"] == ["ok", "fine"]
    assert (scalar["shape"], scalar["data"]) == ([], [7])
    # Our own decoder reads the special floats back.
    again = decode_infer(request(tensor("s", [2, 2], "FP32", score["data"])))
    np.testing.assert_array_equal(again.inputs["s"], [[1.0, np.nan], [np.inf, -np.inf]])


def test_a_null_elsewhere_in_the_response_leaves_finite_floats_as_they_are() -> None:
    """NaN is found by looking for orjson's null; a null or "null" anywhere else changes nothing."""
    body, _ = encode_infer(
        model_name="null",
        model_version="1",
        request_id="null",
        outputs={
            "p": np.array([0.1, 0.7], dtype=np.float32),
            "q": np.array([0.5, np.nan]),
            "word": np.array(["null"], dtype=object),
        },
        parameters={"note": None},
    )

    assert b'"data":[0.1,0.7]' in body  # float32 written as float32, not widened
    _, q, word = orjson.loads(body)["outputs"]
    assert (q["data"], word["data"]) == ([0.5, "NaN"], ["null"])


def test_encode_refuses_bytes_that_json_cannot_carry() -> None:
    with pytest.raises(InvalidInput, match=r"output 'raw' holds bytes that are not valid UTF-8"):
        encode_infer(
            model_name="m",
            model_version=None,
            request_id=None,
            outputs={"raw": np.array([b"\xff"], dtype=object)},
        )


def test_encode_refuses_dtypes_outside_the_protocol() -> None:
    with pytest.raises(PredictionFailed, match=r"output 'when' has numpy dtype datetime64"):
        encode_infer(
            model_name="m",
            model_version=None,
            request_id=None,
            outputs={"when": np.array(["2024-01-01"], dtype="datetime64[D]")},
        )


@pytest.mark.parametrize(
    ("parameters", "outputs", "expected"),
    [
        (None, None, ()),
        ({"binary_data_output": True}, [{"name": "a"}], (RequestedOutput("a", True),)),
        (
            {"binary_data_output": True},
            [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
            (RequestedOutput("a", False), RequestedOutput("b", True)),
        ),
        (None, [{"name": "a", "parameters": {"binary_data": True}}], (RequestedOutput("a", True),)),
    ],
    ids=["none", "request-default", "per-output-override", "per-output"],
)
def test_requested_outputs(parameters: Any, outputs: Any, expected: Any) -> None:
    fields: dict[str, Any] = {}
    if parameters is not None:
        fields["parameters"] = parameters
    if outputs is not None:
        fields["outputs"] = outputs
    assert decode_infer(request(tensor(), **fields)).outputs == expected


def test_json_specials_and_coercions() -> None:
    decoded = decode_infer(
        request(
            tensor("f", [3], "FP64", [1, "-Infinity", 2.5]),
            tensor("i", [2, 2], "INT8", [[-128, 127], [0, 1]]),
            tensor("u", [2], "UINT64", [2**64 - 1, 0]),
            tensor("e", [0, 3], "FP32", []),
            tensor("s", [1, 2], "BYTES", [["a", "é"]]),
            tensor("bf", [2], "BF16", [0.5, 1]),
        ),
    )
    f, i, u, e, s, bf = decoded.inputs.values()
    np.testing.assert_array_equal(f, [1.0, -np.inf, 2.5])
    assert i.dtype == np.int8
    assert i.tolist() == [[-128, 127], [0, 1]]
    assert u.dtype == np.uint64
    assert u.tolist() == [2**64 - 1, 0]
    assert e.shape == (0, 3)
    assert e.dtype == np.float32
    assert s.dtype == object
    assert s.tolist() == [["a", "é"]]
    assert bf.dtype == np.float32
    assert bf.tolist() == [0.5, 1.0]
    assert decoded.id is None


def test_binary_input_without_data_and_empty_binary_tensor() -> None:
    header = request(
        {"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
        {"name": "e", "shape": [0], "datatype": "FP64", "parameters": {"binary_data_size": 0}},
        {"name": "s", "shape": [0], "datatype": "BYTES", "parameters": {"binary_data_size": 0}},
    )
    decoded = decode_infer(header + np.array([5, -6], dtype="<i4").tobytes(), len(header))
    assert decoded.inputs["x"].tolist() == [5, -6]
    assert decoded.inputs["e"].shape == (0,)
    assert decoded.inputs["s"].shape == (0,)


@pytest.mark.parametrize(
    ("shape", "datatype"),
    [([0, 4], "FP64"), ([0], "BYTES"), ([0, 3, 2], "INT8"), ([0, 2**40], "UINT8")],
    ids=["fp64", "bytes", "int8", "uint8-wide"],
)
def test_inputs_with_no_values_decode_typed_and_mark_the_request_empty(
    shape: list[int], datatype: str
) -> None:
    json_body = request(tensor("x", shape, datatype, []), tensor("y", [0], "FP32", []))
    header = request(
        {"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": 0}}
    )
    for decoded in (decode_infer(json_body), decode_infer(header, len(header))):
        assert decoded.empty
        assert decoded.inputs["x"].shape == tuple(shape)
        assert decoded.inputs["x"].dtype == JSON_DATATYPES[datatype]
    assert not decode_infer(request(tensor())).empty


def binary_header(item: dict[str, Any]) -> tuple[bytes, int]:
    body = request(item)
    return body, len(body)


def binary_body(
    datatype: str, shape: list[int], raw: bytes, size: int | None = None, extra: bytes = b""
) -> tuple[bytes, int]:
    params = {"binary_data_size": len(raw) if size is None else size}
    header = request({"name": "x", "shape": shape, "datatype": datatype, "parameters": params})
    return header + raw + extra, len(header)


B = binary_body
NO_HEADER = None
ERRORS = [  # (id, body, Inference-Header-Content-Length, message)
    ("malformed-json", b'{"inputs": [', NO_HEADER, "malformed JSON: "),
    ("json-nan", b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}',
     NO_HEADER, "malformed JSON: "),
    ("not-object", b"[1, 2]", NO_HEADER, "request body must be a JSON object"),
    ("no-inputs", b'{"id": "1"}', NO_HEADER, "request has no 'inputs' list"),
    ("inputs-not-list", b'{"inputs": {"x": 1}}', NO_HEADER, "request has no 'inputs' list"),
    ("empty-inputs", b'{"inputs": []}', NO_HEADER, "request has no 'inputs' list"),
    ("id-not-string", request(tensor(), id=5), NO_HEADER, "request 'id' must be a string"),
    ("parameters-not-object", request(tensor(), parameters=[1]), NO_HEADER,
     "request 'parameters' must be an object"),
    ("binary-output-not-bool", request(tensor(), parameters={"binary_data_output": "yes"}),
     NO_HEADER, "request parameters.binary_data_output must be true or false"),
    ("input-not-object", request("x"), NO_HEADER,
     "input #0 must be an object with name, shape, datatype and data"),
    ("no-name", request({"shape": [1], "datatype": "FP32", "data": [1]}), NO_HEADER,
     "input #0 has no 'name'"),
    ("size-mismatch", request(tensor("x", [2, 3], "FP32", [1, 2, 3, 4, 5])), NO_HEADER,
     "input 'x': shape [2, 3] needs 6 values, got 5"),
    ("nested-size-mismatch", request(tensor("x", [2, 2], "INT32", [[1, 2], [3, 4], [5, 6]])),
     NO_HEADER, "input 'x': shape [2, 2] needs 4 values, got 6"),
    ("ragged", request(tensor("x", [2, 2], "FP32", [[1, 2], [3]])), NO_HEADER,
     "input 'x': 'data' is ragged (nested lists of different lengths)"),
    ("unknown-datatype", request(tensor("x", [1], "FP128", [1])), NO_HEADER,
     "input 'x': unknown datatype 'FP128'"),
    ("datatype-list", request(tensor("x", [1], ["FP32"], [1])), NO_HEADER,
     "input 'x': unknown datatype ['FP32']"),
    ("float-for-int", request(tensor("x", [2], "INT64", [1, 2.5])), NO_HEADER,
     "input 'x': declared INT64 but data contains non-integer values"),
    ("integral-float-for-int", request(tensor("x", [1], "INT32", [1.0])), NO_HEADER,
     "input 'x': declared INT32 but data contains non-integer values"),
    ("string-for-int", request(tensor("x", [1], "INT32", ["1"])), NO_HEADER,
     "input 'x': declared INT32 but data contains non-integer values"),
    ("bool-for-int", request(tensor("x", [1], "INT32", [True])), NO_HEADER,
     "input 'x': declared INT32 but data contains non-integer values"),
    ("int8-overflow", request(tensor("x", [2], "INT8", [1, 128])), NO_HEADER,
     "input 'x': a value is out of range for INT8 (-128..127)"),
    ("uint-negative", request(tensor("x", [2], "UINT32", [-1, 2])), NO_HEADER,
     "input 'x': a value is out of range for UINT32 (0..4294967295)"),
    ("int64-overflow", request(tensor("x", [1], "INT64", [2**63])), NO_HEADER,
     "input 'x': a value is out of range for INT64"),
    ("beyond-64-bits", b'{"inputs":[{"name":"x","shape":[1],"datatype":"UINT64",'
     b'"data":[18446744073709551616]}]}', NO_HEADER,
     "input 'x': a value is out of range for UINT64"),
    ("fp16-overflow", request(tensor("x", [1], "FP16", [70000.0])), NO_HEADER,
     "input 'x': a value is out of range for FP16"),
    ("int-for-bool", request(tensor("x", [2], "BOOL", [True, 1])), NO_HEADER,
     "input 'x': declared BOOL but data is not boolean"),
    ("string-for-bool", request(tensor("x", [1], "BOOL", ["true"])), NO_HEADER,
     "input 'x': declared BOOL but data is not boolean"),
    ("bool-for-float", request(tensor("x", [1], "FP32", [True])), NO_HEADER,
     "input 'x': declared FP32 but data is not numeric"),
    ("string-for-float", request(tensor("x", [2], "FP32", [1.0, "nan"])), NO_HEADER,
     "input 'x': declared FP32 but data is not numeric"),
    ("null-for-float", request(tensor("x", [1], "FP64", [None])), NO_HEADER,
     "input 'x': declared FP64 but data is not numeric"),
    ("number-for-bytes", request(tensor("x", [2], "BYTES", ["a", 1])), NO_HEADER,
     "input 'x': declared BYTES but data is not a (nested) list of strings"),
    ("ragged-bytes", request(tensor("x", [3], "BYTES", [["a", "b"], ["c"]])), NO_HEADER,
     "input 'x': declared BYTES but data is not a (nested) list of strings"),
    ("negative-dim", request(tensor("x", [-1], "FP32", [1])), NO_HEADER,
     "input 'x': shape must be a list of non-negative integers"),
    ("float-dim", request(tensor("x", [1.0], "FP32", [1])), NO_HEADER,
     "input 'x': shape must be a list of non-negative integers"),
    ("no-shape", request({"name": "x", "datatype": "FP32", "data": [1]}), NO_HEADER,
     "input 'x': shape must be a list of non-negative integers"),
    ("data-not-list", request({"name": "x", "shape": [1], "datatype": "FP32", "data": 1}),
     NO_HEADER, "input 'x': 'data' must be a list"),
    ("no-data", request(tensor("x", data=None)), NO_HEADER,
     "input 'x' has no 'data' and no binary_data_size"),
    ("duplicate-input", request(tensor("x"), tensor("x")), NO_HEADER, "duplicate input name 'x'"),
    ("duplicate-output", request(tensor(), outputs=[{"name": "y"}, {"name": "y"}]), NO_HEADER,
     "duplicate output name 'y'"),
    ("output-no-name", request(tensor(), outputs=[{}]), NO_HEADER,
     "requested output #0 has no 'name'"),
    ("outputs-not-list", request(tensor(), outputs={"name": "y"}), NO_HEADER,
     "request 'outputs' must be a list"),
    ("classification",
     request(tensor(), outputs=[{"name": "y", "parameters": {"classification": 3}}]), NO_HEADER,
     "output 'y': the classification extension is not supported"),
    ("shared-memory", request({**tensor(), "parameters": {"shared_memory_region": "r"}}),
     NO_HEADER, "input 'x': shared-memory inputs are not supported"),
    ("header-longer-than-body", b'{"inputs": []}', 99,
     "Inference-Header-Content-Length is 99 but the body has 14 bytes"),
    ("negative-header-length", b'{"inputs": []}', -1, "Inference-Header-Content-Length is -1"),
    ("binary-without-header",
     request({"name": "x", "shape": [1], "datatype": "FP32",
              "parameters": {"binary_data_size": 4}}), NO_HEADER,
     "input 'x' has binary_data_size but the request has no Inference-Header-Content-Length"),
    ("binary-and-data",
     *binary_header({**tensor("x", [1], "FP32", [1]), "parameters": {"binary_data_size": 4}}),
     "input 'x' has both 'data' and binary_data_size"),
    ("binary-size-wrong-for-shape", *B("FP32", [2, 3], b"\x00" * 20),
     "input 'x': shape [2, 3] of FP32 needs 24 bytes of binary data, got 20"),
    ("binary-past-end", *B("FP64", [2], b"\x00" * 8, size=16),
     "input 'x': binary_data_size 16 runs past the end of the body (8 bytes of binary data left)"),
    ("binary-left-over", *B("INT32", [1], b"\x00" * 4, extra=b"\x01\x02"),
     "the body has 2 bytes after the last binary input"),
    ("binary-size-negative", *B("INT32", [1], b"", size=-4),
     "input 'x': binary_data_size must be a non-negative integer"),
    ("binary-bool-not-0-1", *B("BOOL", [2], b"\x01\x02"),
     "input 'x': declared BOOL but data is not boolean"),
    ("binary-bytes-truncated", *B("BYTES", [1], b"\x05\x00\x00\x00ab"),
     "input 'x': BYTES binary data is truncated"),
    ("binary-bytes-short-prefix", *B("BYTES", [1], b"\x05\x00"),
     "input 'x': BYTES binary data is truncated"),
    ("binary-bytes-count", *B("BYTES", [2], b"\x01\x00\x00\x00a"),
     "input 'x': shape [2] needs 2 values, got 1"),
    ("zero-rows-with-data", request(tensor("x", [0, 4], "FP64", [1.0])), NO_HEADER,
     "input 'x': shape [0, 4] needs 0 values, got 1"),
    ("zero-rows-huge-width", request(tensor("x", [0, 2**63 - 1], "FP64", [])), NO_HEADER,
     f"input 'x': shape [0, {2**63 - 1}] is too large for any array "
     "(its non-zero dimensions multiply past 2**63 bytes)"),
    ("huge-rows-zero-width", request(tensor("x", [2**63, 0], "INT8", [])), NO_HEADER,
     f"input 'x': shape [{2**63}, 0] is too large for any array"),
    ("zero-rows-huge-bytes", request(tensor("x", [0, 2**62], "BYTES", [])), NO_HEADER,
     f"input 'x': shape [0, {2**62}] is too large for any array"),
    ("binary-zero-rows-huge-width", *B("FP32", [0, 2**63 - 1], b""),
     f"input 'x': shape [0, {2**63 - 1}] is too large for any array"),
    ("binary-bytes-zero-rows-huge-width", *B("BYTES", [2**62, 0, 2**62], b""),
     f"input 'x': shape [{2**62}, 0, {2**62}] is too large for any array"),
    ("binary-zero-rows-with-data", *B("FP64", [0, 4], b"\x00" * 8),
     "input 'x': shape [0, 4] of FP64 needs 0 bytes of binary data, got 8"),
    ("product-past-int64", request(tensor("x", [2**32, 2**32], "FP64", [1.0])), NO_HEADER,
     f"input 'x': shape [{2**32}, {2**32}] needs {2**64} values, got 1"),
    ("negative-dim-with-zero", request(tensor("x", [0, -4], "FP64", [])), NO_HEADER,
     "input 'x': shape must be a list of non-negative integers"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_decode_errors_name_the_problem(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match="^" + re.escape(message)):
        decode_infer(body, header_length)


def test_header_length_equal_to_body_is_plain_json() -> None:
    body = request(tensor())
    assert decode_infer(body, len(body)).inputs["x"].tolist() == [1.0, 2.0]


def test_encode_error() -> None:
    assert orjson.loads(encode_error("input 'x': bad")) == {"error": "input 'x': bad"}
