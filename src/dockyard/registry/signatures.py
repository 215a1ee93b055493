"""Model signatures: inferred from reference data or written by a user; requests checked on them.

``prepare_input`` is the one validation every request passes through; it is pure numpy (pandas is
imported only when a DataFrame is involved) and does not copy a block that already fits.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dockyard.datatypes import V2_TO_NUMPY, v2_datatype
from dockyard.errors import InvalidInput
from dockyard.registry.plans import InputPlan, is_nan, listed
from dockyard.registry.records import Signature, TensorSpec

DATATYPES = (*V2_TO_NUMPY, "BF16")
SPEC_KEYS = ("name", "datatype", "shape", "categorical", "allow_nan")


def infer_signature(
    reference_data: object,
    outputs: Mapping[str, np.ndarray],
    *,
    tabular: bool,
    input_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Signature:
    """Infer a signature from reference inputs and the outputs the model gave for them.

    Tabular: a 2-D array (columns ``feature_names`` or x0, x1, …) or a DataFrame; each feature is a
    ``(-1,)`` column, strings and categories are categorical BYTES. Tensor: one array (named
    ``input_names[0]`` or "input-0") or a dict of arrays, each ``(-1, *shape[1:])``. ``allow_nan``
    is set where the reference holds NaN or infinity.
    """
    if tabular:
        inputs = _tabular_specs(reference_data, feature_names)
    else:
        tensors = _named_tensors(reference_data, input_names)
        inputs = tuple(_tensor_spec(name, array, "input") for name, array in tensors.items())
    specs = tuple(
        _tensor_spec(name, np.asarray(value), "output") for name, value in outputs.items()
    )
    return Signature(inputs=inputs, outputs=specs, tabular=tabular)


def parse_signature(data: Mapping[str, Any]) -> Signature:
    """Validate a user-written signature (the ``Signature.to_dict`` form); InvalidInput if wrong.

    ``tabular`` defaults to false; a tabular input's shape may be left out (it is always ``[-1]``).
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("a signature must be an object with 'inputs' and 'outputs'")
    unknown = [key for key in data if key not in ("inputs", "outputs", "tabular")]
    if unknown:
        raise InvalidInput(
            f"signature has unknown key {unknown[0]!r}; expected: inputs, outputs, tabular"
        )
    tabular = data.get("tabular", False)
    if not isinstance(tabular, bool):
        raise InvalidInput("signature 'tabular' must be true or false")
    inputs = _parse_specs(data.get("inputs"), "input", tabular=tabular)
    if not inputs:
        raise InvalidInput("signature has no inputs")
    outputs = _parse_specs(data.get("outputs", []), "output", tabular=False)
    return Signature(inputs=inputs, outputs=outputs, tabular=tabular)


def prepare_input(signature: Signature, tensors: Mapping[str, np.ndarray]) -> object:
    """Check request tensors against the signature; return what the runtime takes, or raise.

    Tabular: one ``[N, F]`` tensor under any non-feature name (numeric/bool features only) or one
    ``[N]``/``[N, 1]`` tensor per feature; the result is a 2-D array, or a DataFrame when a feature
    is BYTES (its bytes decoded as UTF-8). Tensor: the exact input names, ranks and fixed dims; the
    result is a dict in signature order. Values are cast to the signature's dtype when that loses
    nothing (any int/bool to float, float to int only when integral, ints within range, FP64 to
    FP32 unless it overflows). NaN/infinity fail where ``allow_nan`` is false. A block that already
    fits is returned as is, not copied. Errors are SignatureMismatch naming the input.

    This builds an ``InputPlan`` per call; a server keeps one per deployed version instead.
    """
    return InputPlan(signature).prepare(tensors)


def reference_input(signature: Signature, reference_data: object, rows: int = 5) -> object:
    """What ``prepare_input`` gives for the first ``rows`` rows of the reference data."""
    specs = signature.inputs
    if not signature.tabular:
        if isinstance(reference_data, Mapping):
            tensors = {str(k): np.asarray(v)[:rows] for k, v in reference_data.items()}
        elif len(specs) == 1:
            tensors = {specs[0].name: np.asarray(reference_data)[:rows]}
        else:
            raise InvalidInput(f"reference data must be a dict of {len(specs)} arrays")
        return prepare_input(signature, tensors)
    columns = _reference_columns(reference_data, specs, rows)
    return prepare_input(
        signature, {spec.name: col for spec, col in zip(specs, columns, strict=True)}
    )


def _tabular_specs(
    reference: object, feature_names: Sequence[str] | None
) -> tuple[TensorSpec, ...]:
    frame = _as_frame(reference)
    if frame is not None:
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise InvalidInput("reference data is empty")
        names = [str(column) for column in frame.columns]
        if feature_names is not None and list(feature_names) != names:
            raise InvalidInput(
                f"feature_names ({listed(feature_names)}) differ from the DataFrame's columns "
                f"({listed(names)}); leave feature_names out"
            )
        specs = tuple(_frame_spec(name, frame.iloc[:, j]) for j, name in enumerate(names))
    else:
        array = np.asarray(reference)
        if array.ndim != 2:
            raise InvalidInput(
                "tabular reference data must be 2-D (rows x features); "
                f"got shape {list(array.shape)}"
            )
        if array.size == 0:
            raise InvalidInput("reference data is empty")
        names = [f"x{j}" for j in range(array.shape[1])]
        if feature_names is not None:
            names = [str(name) for name in feature_names]
            if len(names) != array.shape[1]:
                raise InvalidInput(
                    f"feature_names has {len(names)} names but the reference data has "
                    f"{array.shape[1]} columns"
                )
        columns = _matrix_columns(array, len(array))
        specs = tuple(_column_spec(n, c) for n, c in zip(names, columns, strict=True))
    _check_unique([spec.name for spec in specs], "feature")
    return specs


def _frame_spec(name: str, column: Any) -> TensorSpec:
    from pandas.api import types

    dtype = column.dtype
    categorical = isinstance(dtype, types.CategoricalDtype)
    if categorical:
        dtype = dtype.categories.dtype
    if types.is_bool_dtype(dtype):
        datatype = "BOOL"
    elif types.is_integer_dtype(dtype) or types.is_float_dtype(dtype):
        datatype = v2_datatype(np.dtype(getattr(dtype, "numpy_dtype", dtype)))
    elif types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
        datatype, categorical = "BYTES", True
    else:
        raise InvalidInput(
            f"reference column {name!r} has dtype {column.dtype}, which a model signature "
            "cannot describe; convert it to numbers or strings"
        )
    missing = bool(column.isna().any())
    if missing and datatype not in ("BYTES", "FP16", "FP32", "FP64"):
        datatype = "FP64"  # a nullable int/bool column with gaps: NaN needs a float
    elif datatype in ("FP16", "FP32", "FP64") and not missing:
        missing = not bool(np.isfinite(column.to_numpy(dtype=np.float64)).all())
    return TensorSpec(name, datatype, (-1,), categorical=categorical, allow_nan=missing)


def _column_spec(name: str, column: np.ndarray) -> TensorSpec:
    if column.dtype.kind in "OUS":
        missing = any(v is None or is_nan(v) for v in column.tolist())
        return TensorSpec(name, "BYTES", (-1,), categorical=True, allow_nan=missing)
    return TensorSpec(name, v2_datatype(column.dtype), (-1,), allow_nan=_has_nonfinite(column))


def _tensor_spec(name: str, array: np.ndarray, role: str) -> TensorSpec:
    if role == "input" and (array.ndim == 0 or array.shape[0] == 0):
        raise InvalidInput(f"reference input {name!r} is empty or has no batch dimension")
    try:
        datatype = v2_datatype(array.dtype)
    except InvalidInput as exc:
        raise InvalidInput(f"{role} {name!r}: {exc}") from None
    shape = (-1, *array.shape[1:]) if array.ndim else ()
    return TensorSpec(name, datatype, shape, allow_nan=_has_nonfinite(array))


def _named_tensors(reference: object, input_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(reference, Mapping):
        if not reference:
            raise InvalidInput("reference data is empty")
        tensors = {str(key): np.asarray(value) for key, value in reference.items()}
        if input_names is None:
            return tensors
        if sorted(input_names) != sorted(tensors):
            raise InvalidInput(
                f"input_names ({', '.join(input_names)}) do not match the reference data's keys "
                f"({', '.join(tensors)})"
            )
        return {name: tensors[name] for name in input_names}
    names = ["input-0"] if input_names is None else list(input_names)
    if len(names) != 1:
        raise InvalidInput(
            f"input_names has {len(names)} names but the reference data is a single array"
        )
    return {names[0]: np.asarray(reference)}


def _parse_specs(items: Any, role: str, *, tabular: bool) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list | tuple):
        raise InvalidInput(f"signature '{role}s' must be a list")
    specs = tuple(_parse_spec(item, role, index, tabular) for index, item in enumerate(items))
    _check_unique([spec.name for spec in specs], f"signature {role}")
    return specs


def _parse_spec(item: Any, role: str, index: int, tabular: bool) -> TensorSpec:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"signature {role} #{index} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"signature {role} #{index} has no 'name'")
    where = f"signature {role} {name!r}"
    unknown = [key for key in item if key not in SPEC_KEYS]
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r}; expected: {', '.join(SPEC_KEYS)}")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    shape = item.get("shape", [-1] if tabular else None)
    if not isinstance(shape, list | tuple) or any(type(d) is not int or d < -1 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of integers (-1 for any size)")
    if tabular and list(shape) != [-1]:
        raise InvalidInput(f"{where}: a tabular feature has shape [-1], got {list(shape)}")
    flags = {key: item.get(key, False) for key in ("categorical", "allow_nan")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInput(f"{where}: '{key}' must be true or false")
    return TensorSpec(name, datatype, tuple(shape), **flags)


def _check_unique(names: list[str], role: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInput(f"duplicate {role} name {name!r}")
        seen.add(name)


def _has_nonfinite(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and not bool(np.isfinite(array).all())


def _matrix_columns(array: np.ndarray, rows: int) -> list[np.ndarray]:
    """The columns of a 2-D array; an object array's columns get the dtype numpy infers for each."""
    if array.dtype.kind != "O":
        return [array[:rows, j] for j in range(array.shape[1])]
    return [np.array(array[:rows, j].tolist()) for j in range(array.shape[1])]


def _reference_columns(
    reference: object, specs: tuple[TensorSpec, ...], rows: int
) -> list[np.ndarray]:
    frame = _as_frame(reference)
    if frame is None:
        array = np.asarray(reference)
        if array.ndim != 2 or array.shape[1] != len(specs):
            raise InvalidInput(
                f"reference data must be 2-D with {len(specs)} columns; "
                f"got shape {list(array.shape)}"
            )
        return _matrix_columns(array, rows)
    positions = {str(column): j for j, column in enumerate(frame.columns)}
    columns = []
    for spec in specs:
        if spec.name not in positions:
            raise InvalidInput(f"reference data has no column {spec.name!r}")
        column = frame.iloc[:rows, positions[spec.name]]
        if spec.datatype == "BYTES":
            columns.append(column.astype(object).to_numpy())
        elif column.hasnans:
            columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            columns.append(np.asarray(column.to_numpy()))
    return columns


def _as_frame(reference: object) -> Any:
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(reference, pandas.DataFrame):
        return reference
    return None
