"""Open Inference Protocol datatypes and their numpy equivalents (one table, used everywhere)."""

from __future__ import annotations

import numpy as np

from dockyard.errors import InvalidInput

V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
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
"""BF16 has no numpy dtype; it is accepted as binary data only and widened to FP32 on decode."""

NUMPY_KIND_TO_V2 = {"b": "BOOL", "O": "BYTES", "U": "BYTES", "S": "BYTES"}
ITEM_SIZES = {name: dtype.itemsize for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}
ITEM_SIZES["BF16"] = 2
NUMERIC = frozenset(V2_TO_NUMPY) - {"BOOL", "BYTES"}
FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a V2 datatype name, or InvalidInput naming the unknown type."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        if datatype == "BF16":
            return np.dtype(np.float32)
        known = ", ".join([*V2_TO_NUMPY, "BF16"])
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {known}") from None


def v2_datatype(dtype: np.dtype[np.generic]) -> str:
    """The V2 datatype name for a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in NUMPY_KIND_TO_V2:
        return NUMPY_KIND_TO_V2[dtype.kind]
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def integer_range(dtype: np.dtype[np.generic]) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype, as exact Python ints."""
    bits = dtype.itemsize * 8
    if dtype.kind == "u":
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
