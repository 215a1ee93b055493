"""The Open Inference Protocol's gRPC messages to and from the tensors of ``serving.protocol``.

A ``ModelInferRequest`` becomes the same ``InferRequest`` the REST codec decodes, so one
prediction path serves both protocols. Its tensors come from ``raw_input_contents`` (the layout of
the REST binary extension: ``protocol.from_binary``) or from the typed ``contents`` (one numpy
conversion per tensor, in C). Outputs go back raw when the inputs came raw or binary data was
asked for, else typed; FP16 and BF16 have no typed field, so an output of either makes them raw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dockyard.datatypes import integer_range, numpy_dtype
from dockyard.errors import InvalidInput
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.protocol import (
    DATATYPES,
    InferRequest,
    RequestedOutput,
    as_strings,
    from_binary,
    invalid_input,
    output_datatype,
    to_binary,
)

CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Datatype → the ``InferTensorContents`` field that carries it typed (none for FP16, BF16)."""
FIELDS = tuple(dict.fromkeys(CONTENTS.values()))
FIELD_DTYPES = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
"""A typed field's values as numpy reads them (narrower datatypes are checked, then narrowed)."""
NARROW = frozenset({"INT8", "INT16", "UINT8", "UINT16"})
RAW_ONLY = frozenset({"FP16", "BF16"})


def decode_request(request: pb.ModelInferRequest) -> InferRequest:
    """The V2 request a ``ModelInferRequest`` carries; InvalidInput naming the input at fault
    (no inputs, a name twice, an unknown datatype, data that does not fill the shape, typed and
    raw contents mixed, a value out of its datatype's range)."""
    tensors = request.inputs
    if not tensors:
        raise InvalidInput("request has no 'inputs'")
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs: "
            "give one per input, in the order of 'inputs'"
        )
    inputs: dict[str, np.ndarray] = {}
    empty = False
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if not name:
            raise InvalidInput(f"input #{index} has no 'name'")
        if name in inputs:
            raise InvalidInput(f"duplicate input name {name!r}")
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise invalid_input(name, f"unknown datatype {datatype!r}")
        shape = tuple(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise invalid_input(name, "shape must be a list of non-negative integers")
        if tensor.parameters and "shared_memory_region" in tensor.parameters:
            raise invalid_input(name, "shared-memory inputs are not supported")
        if raw:
            if tensor.HasField("contents"):
                raise invalid_input(
                    name,
                    "has 'contents' and the request has raw_input_contents: use one or the other",
                )
            array = from_binary(name, memoryview(raw[index]), shape, datatype)
        else:
            array = _from_contents(name, tensor.contents, shape, datatype)
        if not array.size:
            empty = True
        inputs[name] = array
    parameters = parameters_of(request.parameters)
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput("request parameters.binary_data_output must be a bool_param")
    outputs = _requested_outputs(request.outputs, binary_output)
    return InferRequest(request.id or None, parameters, inputs, outputs, binary_output, empty)


def wants_raw(request: pb.ModelInferRequest, decoded: InferRequest) -> bool:
    """Whether the answer's outputs go in ``raw_output_contents``: the inputs came raw (as
    tritonclient sends them, and reads only raw outputs) or binary data was asked for."""
    return (
        bool(request.raw_input_contents)
        or decoded.binary_output
        or any(output.binary for output in decoded.outputs)
    )


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    raw: bool,
) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` of a prediction: every output raw (little-endian, row-major;
    BYTES as 4-byte lengths and bytes) or every output typed, never a mix, as the protocol asks."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    typed = [(name, np.asarray(array)) for name, array in outputs.items()]
    datatypes = [output_datatype(name, array) for name, array in typed]
    raw = raw or not RAW_ONLY.isdisjoint(datatypes)
    chunks: list[bytes] = []
    for (name, array), datatype in zip(typed, datatypes, strict=True):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            chunks.append(to_binary(array, datatype))
        elif datatype == "BYTES":
            values = as_strings(name, array.ravel().tolist())
            tensor.contents.bytes_contents.extend([value.encode("utf-8") for value in values])
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    if raw:
        response.raw_output_contents.extend(chunks)
    return response


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as the plain dict the REST codec reads."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def _from_contents(
    name: str, contents: pb.InferTensorContents, shape: tuple[int, ...], datatype: str
) -> np.ndarray:
    count = math.prod(shape)
    if datatype in RAW_ONLY:
        if count == 0:
            return _shaped(name, np.empty(0, dtype=numpy_dtype(datatype)), shape)
        raise invalid_input(
            name, f"{datatype} has no typed 'contents' field: send it in raw_input_contents"
        )
    field = CONTENTS[datatype]
    values = getattr(contents, field)
    if len(values) != count:
        other = next((each for each in FIELDS if each != field and getattr(contents, each)), None)
        if other is not None:
            raise invalid_input(
                name,
                f"declared {datatype}, whose values go in contents.{field}, "
                f"but the data is in contents.{other}",
            )
        raise invalid_input(name, f"shape {list(shape)} needs {count} values, got {len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return _shaped(name, array, shape)
    array = np.array(list(values), dtype=FIELD_DTYPES[field])
    if datatype in NARROW and count:
        target = numpy_dtype(datatype)
        low, high = integer_range(target)
        if int(array.min()) < low or int(array.max()) > high:
            raise invalid_input(name, f"a value is out of range for {datatype} ({low}..{high})")
        array = array.astype(target)
    return _shaped(name, array, shape)


def _shaped(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError:  # dimensions that multiply past what numpy can index, with a zero
        raise invalid_input(name, f"shape {list(shape)} is too large for any array") from None


def _requested_outputs(requested: Any, default_binary: bool) -> tuple[RequestedOutput, ...]:
    result: dict[str, RequestedOutput] = {}
    for index, output in enumerate(requested):
        name = output.name
        if not name:
            raise InvalidInput(f"requested output #{index} has no 'name'")
        if name in result:
            raise InvalidInput(f"duplicate output name {name!r}")
        parameters = parameters_of(output.parameters)
        if parameters.get("classification"):
            raise InvalidInput(f"output {name!r}: the classification extension is not supported")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise InvalidInput(f"output {name!r}: parameters.binary_data must be a bool_param")
        result[name] = RequestedOutput(name, binary)
    return tuple(result.values())
