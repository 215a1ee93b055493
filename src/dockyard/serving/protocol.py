"""Open Inference Protocol V2 codec: request bytes in, numpy arrays out, and back.

Pure functions over bytes, so the routes stay thin and the hot path is testable without a server.
JSON goes through orjson; tensor data becomes numpy in C (``np.array``), never element by element.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from dockyard.datatypes import (
    FLOATS,
    ITEM_SIZES,
    V2_TO_NUMPY,
    integer_range,
    numpy_dtype,
    v2_datatype,
)
from dockyard.errors import InvalidInput, PredictionFailed

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = frozenset({*V2_TO_NUMPY, "BF16"})
SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""JSON has no NaN or infinity: FP data may carry these strings instead (decoded and encoded)."""
NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
OUTPUT_DATATYPES = {dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}
"""Native numeric and bool dtypes to their V2 names: one dict lookup per output on the hot path."""
NO_BINARY = memoryview(b"")
FP64 = V2_TO_NUMPY["FP64"]


@dataclass(slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: the name and whether to send it as binary data.

    Built per request, so not frozen: a frozen dataclass pays an ``object.__setattr__`` per field
    (~2.5x the instructions of this one; a named tuple's Python ``__new__``, ~1.6x). Never mutated.
    """

    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    """A decoded V2 request; ``inputs`` keeps the request's order (not frozen: see above).

    ``empty``: some input holds no values (a zero in its shape). Once the input plan has accepted
    the inputs, that means the batch has no rows, which is answered without the model.
    """

    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool
    empty: bool = False


def decode_infer(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode a V2 inference request; ``header_length`` is the Inference-Header-Content-Length.

    JSON ``data`` may be nested or flat and is reshaped to ``shape``. FP datatypes accept integers,
    floats and the strings "NaN", "Infinity", "-Infinity"; integer datatypes accept integers in
    range only; BOOL accepts true/false only; BYTES accepts strings (kept as ``str``). Binary inputs
    (``parameters.binary_data_size``, bytes after the JSON header in input order) are copied into
    owned, aligned, writable arrays; binary BYTES elements become ``bytes``; BF16 widens to float32.
    Every problem raises InvalidInput naming the input.
    """
    header: bytes | memoryview = body
    binary = NO_BINARY
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    payload = load_json(header)
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("request 'id' must be a string")
    parameters = payload.get("parameters")
    binary_output = False
    if parameters is None:
        parameters = {}
    else:
        parameters = _parameters(parameters, "request")
        binary_output = parameters.get("binary_data_output", False)
        if not isinstance(binary_output, bool):
            raise InvalidInput("request parameters.binary_data_output must be true or false")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request has no 'inputs' list")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    empty = False
    for index, item in enumerate(raw_inputs):
        name, shape, datatype, params = _input_header(index, item)
        if name in inputs:
            raise InvalidInput(f"duplicate input name {name!r}")
        size = None if params is None else params.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidInput(f"input {name!r} has no 'data' and no binary_data_size")
            array = inputs[name] = _from_json(name, item["data"], shape, datatype)
            if not array.size:
                empty = True
            continue
        if "data" in item:
            raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
        if header_length is None:
            raise InvalidInput(
                f"input {name!r} has binary_data_size but the request has no {HEADER_LENGTH} header"
            )
        if type(size) is not int or size < 0:
            raise invalid_input(name, "binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise invalid_input(
                name,
                f"binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes of binary data left)",
            )
        array = inputs[name] = from_binary(name, binary[offset : offset + size], shape, datatype)
        if not array.size:
            empty = True
        offset += size
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes after the last binary input; "
            f"check {HEADER_LENGTH} and each binary_data_size"
        )
    outputs = _requested_outputs(payload.get("outputs"), binary_output)
    return InferRequest(request_id, parameters, inputs, outputs, binary_output, empty)


def encode_infer(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    binary: Collection[str] = (),
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode a V2 response; returns the body and, when outputs went binary, the JSON header length.

    Outputs named in ``binary`` follow the JSON as raw little-endian bytes (BYTES: 4-byte length +
    bytes per element); the caller sets Inference-Header-Content-Length to the returned length.
    The others are flat row-major ``data``; non-finite floats become "NaN"/"Infinity"/"-Infinity".
    A BYTES output sent as JSON carries ``str`` as is and ``bytes`` decoded as UTF-8; bytes that
    are not UTF-8 raise InvalidInput asking for binary output (JSON cannot carry them).
    """
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    if parameters is not None:
        response["parameters"] = dict(parameters)
    items: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, value in outputs.items():
        array = value if type(value) is np.ndarray else np.asarray(value)
        datatype = output_datatype(name, array)
        # orjson writes the shape tuple as a JSON array: no list() needed
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
        if name in binary:
            raw = to_binary(array, datatype)
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = _to_json_data(name, array, datatype)
        items.append(item)
    response["outputs"] = items
    header = orjson.dumps(response, option=NUMPY_OPTION)
    if b"null" in header:
        # orjson writes NaN and ±infinity as null: spell them out in the float outputs holding
        # any, and write again. The usual response has no null, so numpy is not asked first.
        for item in items:
            data = item.get("data")
            if isinstance(data, np.ndarray) and data.dtype.kind == "f":
                finite = np.isfinite(data)
                if not finite.all():
                    item["data"] = _spelled_floats(data, finite)
        header = orjson.dumps(response, option=NUMPY_OPTION)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode_error(message: str) -> bytes:
    """The one error body every client understands: ``{"error": message}``."""
    return orjson.dumps({"error": message})


def invalid_input(name: str, problem: str) -> InvalidInput:
    return InvalidInput(f"input {name!r}: {problem}")


def load_json(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


def _parameters(value: Any, what: str, name: str | None = None) -> dict[str, Any]:
    """``value``, which must be a parameters object; the error names ``what`` (and ``name``),
    formatted only when raised."""
    if not isinstance(value, dict):
        where = what if name is None else f"{what} {name!r}"
        raise InvalidInput(f"{where} 'parameters' must be an object")
    return value


def _input_header(index: int, item: Any) -> tuple[str, tuple[int, ...], str, dict[str, Any] | None]:
    """An input's name, shape, datatype and parameters (None when it has none), all checked."""
    if not isinstance(item, dict):
        raise InvalidInput(f"input #{index} must be an object with name, shape, datatype and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"input #{index} has no 'name'")
    shape = item.get("shape")
    if not isinstance(shape, list):
        raise invalid_input(name, "shape must be a list of non-negative integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise invalid_input(name, "shape must be a list of non-negative integers")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise invalid_input(name, f"unknown datatype {datatype!r}")
    params = item.get("parameters")
    if params is None:
        return name, tuple(shape), datatype, None
    params = _parameters(params, "input", name)
    if "shared_memory_region" in params:
        raise invalid_input(name, "shared-memory inputs are not supported")
    return name, tuple(shape), datatype, params


def _from_json(name: str, data: Any, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    if not isinstance(data, list):
        raise invalid_input(name, "'data' must be a list")
    if datatype == "BYTES":
        array = _json_strings(name, data)
    else:
        try:
            array = np.array(data)
        except ValueError:
            raise invalid_input(
                name, "'data' is ragged (nested lists of different lengths)"
            ) from None
    count = math.prod(shape)
    if array.size != count:
        raise invalid_input(name, f"shape {list(shape)} needs {count} values, got {array.size}")
    if count == 0:
        return _empty(name, shape, datatype)
    if datatype != "BYTES" and not (array.dtype is FP64 and datatype == "FP64"):
        array = _coerce(name, array, data, datatype)  # FP64 parsed as float64 has nothing to check
    return array.reshape(shape)


def _json_strings(name: str, data: list[Any]) -> np.ndarray:
    array = np.array(data, dtype=object)
    if not set(map(type, array.ravel().tolist())) <= {str}:
        raise invalid_input(name, "declared BYTES but data is not a (nested) list of strings")
    return array


def _coerce(name: str, array: np.ndarray, data: Any, datatype: str) -> np.ndarray:
    """Check JSON-parsed values against the declared datatype, then convert (vectorised)."""
    kind = array.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise invalid_input(name, "declared BOOL but data is not boolean")
        return array
    target = numpy_dtype(datatype)
    if datatype in FLOATS:
        if kind in "UO":
            return special_floats(name, data, datatype)
        if kind not in "iuf":
            raise invalid_input(name, f"declared {datatype} but data is not numeric")
        return _narrow_float(name, array, target, datatype)
    low, high = integer_range(target)
    out_of_range = f"input {name!r}: a value is out of range for {datatype} ({low}..{high})"
    if kind == "f":
        # A float array may still hold only integers: orjson reads integers beyond 64 bits as
        # floats, and numpy makes float64 of a mix of int64 and uint64-only values. Rare: go exact.
        values = np.array(data, dtype=object).ravel().tolist()
        if all(type(v) is int for v in values):
            if min(values) < low or max(values) > high:
                raise InvalidInput(out_of_range)
            return np.array(values, dtype=target)
        if any(type(v) is float and v.is_integer() and not low <= v <= high for v in values):
            raise InvalidInput(out_of_range)
    if kind not in "iu":
        raise invalid_input(name, f"declared {datatype} but data contains non-integer values")
    if int(array.min()) < low or int(array.max()) > high:
        raise InvalidInput(out_of_range)
    return array.astype(target, copy=False)


def special_floats(name: str, data: Any, datatype: str, *, null: bool = False) -> np.ndarray:
    """The slow path for FP data holding "NaN"/"Infinity"/"-Infinity" (or null, in V1)."""
    values = np.array(data, dtype=object).ravel().tolist()
    replaced = [
        SPECIAL_FLOATS.get(v, v) if type(v) is str else (math.nan if v is None and null else v)
        for v in values
    ]
    array = np.array(replaced)
    if array.dtype.kind not in "iuf":
        allowed = 'numbers, null or "NaN"' if null else 'numbers or "NaN"'
        raise invalid_input(
            name,
            f"declared {datatype} but data is not numeric "
            f'(allowed: {allowed}, "Infinity", "-Infinity")',
        )
    return _narrow_float(name, array, numpy_dtype(datatype), datatype)


def _narrow_float(name: str, array: np.ndarray, target: np.dtype[Any], datatype: str) -> np.ndarray:
    if array.dtype == target:
        return array  # the usual FP64 case: nothing to narrow, and np.errstate is not free
    with np.errstate(over="ignore"):
        result = array.astype(target, copy=False)
    if result.dtype.itemsize < 8 and not np.isfinite(result).all():
        overflowed = np.isfinite(array) & ~np.isfinite(result)
        if overflowed.any():
            raise invalid_input(name, f"a value is out of range for {datatype}")
    return result


def from_binary(name: str, raw: memoryview, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _binary_strings(name, bytes(raw), shape, count)
    needed = count * ITEM_SIZES[datatype]
    if len(raw) != needed:
        raise invalid_input(
            name,
            f"shape {list(shape)} of {datatype} needs {needed} bytes of binary "
            f"data, got {len(raw)}",
        )
    if count == 0:
        return _empty(name, shape, datatype)
    if datatype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.max() > 1:
            raise invalid_input(name, "declared BOOL but data is not boolean")
        return octets.astype(np.bool_).reshape(shape)
    native = V2_TO_NUMPY[datatype]
    # astype copies: the result owns aligned, writable, native-order memory, not the request body.
    return np.frombuffer(raw, dtype=native.newbyteorder("<")).astype(native).reshape(shape)


def _binary_strings(name: str, raw: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    values: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        start = offset + 4
        if start > end:
            raise invalid_input(name, "BYTES binary data is truncated")
        offset = start + int.from_bytes(raw[offset:start], "little")
        if offset > end:
            raise invalid_input(name, "BYTES binary data is truncated")
        values.append(raw[start:offset])
    if len(values) != count:
        raise invalid_input(name, f"shape {list(shape)} needs {count} values, got {len(values)}")
    if count == 0:
        return _empty(name, shape, "BYTES")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array.reshape(shape)


def _empty(name: str, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    """The array of a shape that holds no values; InvalidInput when numpy cannot make it even so:
    its non-zero dimensions multiply past 2**63 bytes (``[0, 2**63 - 1]``)."""
    try:
        return np.empty(shape, dtype=numpy_dtype(datatype))
    except ValueError:
        raise invalid_input(
            name,
            f"shape {list(shape)} is too large for any array "
            "(its non-zero dimensions multiply past 2**63 bytes)",
        ) from None


def _requested_outputs(raw: Any, default_binary: bool) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput("request 'outputs' must be a list")
    result: dict[str, RequestedOutput] = {}
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"requested output #{index} has no 'name'")
        if name in result:
            raise InvalidInput(f"duplicate output name {name!r}")
        binary = default_binary
        params = item.get("parameters")
        if params is not None:
            params = _parameters(params, "output", name)
            if params.get("classification"):
                raise InvalidInput(
                    f"output {name!r}: the classification extension is not supported"
                )
            binary = params.get("binary_data", default_binary)
            if not isinstance(binary, bool):
                raise InvalidInput(f"output {name!r}: parameters.binary_data must be true or false")
        result[name] = RequestedOutput(name, binary)
    return tuple(result.values())


def output_datatype(name: str, array: np.ndarray) -> str:
    dtype = array.dtype
    datatype = OUTPUT_DATATYPES.get(dtype)
    if datatype is not None:
        return datatype
    try:
        return v2_datatype(dtype if dtype.isnative else dtype.newbyteorder("="))
    except InvalidInput:
        raise PredictionFailed(
            f"output {name!r} has numpy dtype {array.dtype}, which the protocol cannot carry"
        ) from None


def _to_json_data(name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return as_strings(name, array.ravel().tolist())
    flat = array.ravel()  # C-contiguous, as orjson needs; a view when the array already is
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    # orjson writes a C-contiguous numeric array in C: faster than tolist() (benchmarked).
    return flat


def _spelled_floats(flat: np.ndarray, finite: np.ndarray) -> list[Any]:
    """A float array's values with NaN and ±infinity as "NaN", "Infinity" and "-Infinity"."""
    values: list[Any] = flat.tolist()
    for index in np.flatnonzero(~finite).tolist():
        value = values[index]
        values[index] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return values


def as_strings(name: str, values: list[Any]) -> list[str]:
    if set(map(type, values)) <= {str}:
        return values
    result: list[str] = []
    for value in values:
        if isinstance(value, bytes):
            try:
                result.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"output {name!r} holds bytes that are not valid UTF-8; "
                    "request it as binary data (parameters.binary_data: true)"
                ) from None
        else:
            result.append(value if isinstance(value, str) else str(value))
    return result


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(len(raw).to_bytes(4, "little"))
            parts.append(raw)
        return b"".join(parts)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
