"""Model signatures: inferred from reference data or written by a user; requests checked on them.

``prepare_input`` is the one validation every request passes through; it is pure numpy (pandas is
imported only when a DataFrame is involved) and does not copy a block that already fits.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dockyard.datatypes import V2_TO_NUMPY, integer_range, numpy_dtype, v2_datatype
from dockyard.errors import InvalidInput, MissingExtra, SignatureMismatch
from dockyard.registry.records import Signature, TensorSpec

DATATYPES = (*V2_TO_NUMPY, "BF16")
SPEC_KEYS = ("name", "datatype", "shape", "categorical", "allow_nan")
LISTED_NAMES = 10
"""Error messages list at most this many input names."""


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
    """
    if not signature.tabular:
        return _prepare_tensors(signature.inputs, tensors)
    if len(tensors) == 1:
        ((name, array),) = tensors.items()
        if name not in {spec.name for spec in signature.inputs}:
            return _prepare_matrix(signature.inputs, name, array)
    return _prepare_columns(signature.inputs, tensors)


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
                f"feature_names ({_listed(feature_names)}) differ from the DataFrame's columns "
                f"({_listed(names)}); leave feature_names out"
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
        missing = any(v is None or _is_nan(v) for v in column.tolist())
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


def _prepare_tensors(
    specs: tuple[TensorSpec, ...], tensors: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    _check_names(specs, tensors)
    result: dict[str, np.ndarray] = {}
    for spec in specs:
        array = tensors[spec.name]
        if array.ndim != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise SignatureMismatch(
                f"input {spec.name!r}: expected shape {list(spec.shape)}, got {list(array.shape)}"
            )
        result[spec.name] = _check_finite(spec.name, _cast(spec.name, array, spec), spec)
    return result


def _prepare_matrix(specs: tuple[TensorSpec, ...], name: str, array: np.ndarray) -> np.ndarray:
    features = [spec.name for spec in specs]
    if array.ndim != 2 or array.shape[1] != len(specs):
        raise SignatureMismatch(
            f"input {name!r}: expected one [N, {len(specs)}] tensor or one tensor per feature "
            f"({_listed(features)}); got shape {list(array.shape)}"
        )
    text = [spec.name for spec in specs if spec.datatype == "BYTES"]
    if text:
        raise SignatureMismatch(
            f"input {name!r}: features {_listed(text)} are strings, so send one tensor per feature"
        )
    datatypes = {spec.datatype for spec in specs}
    if len(datatypes) == 1:
        result = _cast(name, array, TensorSpec(name, specs[0].datatype, (-1, len(specs))))
    else:
        if array.dtype.kind not in "biuf":
            raise SignatureMismatch(
                f"input {name!r}: expected numbers, got {_datatype(array.dtype)}"
            )
        for j, spec in enumerate(specs):
            if numpy_dtype(spec.datatype).kind != "f":
                _cast(spec.name, array[:, j], spec)  # checks only: integral, in range, 0/1
        target = np.result_type(*(numpy_dtype(datatype) for datatype in datatypes))
        result = array.astype(target, copy=False)
    forbidden = [j for j, spec in enumerate(specs) if not spec.allow_nan]
    if result.dtype.kind == "f" and forbidden:
        block = result if len(forbidden) == len(specs) else result[:, forbidden]
        finite = np.isfinite(block)
        if not finite.all():
            row, column = np.unravel_index(int(np.argmin(finite)), finite.shape)
            raise SignatureMismatch(
                f"input {name!r} contains NaN or infinity in feature "
                f"{specs[forbidden[int(column)]].name!r}, which this model's signature forbids "
                f"(row {int(row)})"
            )
    return result


def _prepare_columns(specs: tuple[TensorSpec, ...], tensors: Mapping[str, np.ndarray]) -> object:
    _check_names(specs, tensors)
    columns: dict[str, np.ndarray] = {}
    rows, first = -1, ""
    for spec in specs:
        array = tensors[spec.name]
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        elif array.ndim != 1:
            raise SignatureMismatch(
                f"input {spec.name!r}: expected shape [-1] or [-1, 1], got {list(array.shape)}"
            )
        if rows < 0:
            rows, first = len(array), spec.name
        elif len(array) != rows:
            raise SignatureMismatch(
                f"input {spec.name!r} has {len(array)} rows but input {first!r} has {rows}"
            )
        column = _check_finite(spec.name, _cast(spec.name, array, spec), spec)
        if spec.datatype == "BYTES":
            column = _text_column(spec.name, column, allow_missing=spec.allow_nan)
        columns[spec.name] = column
    if all(spec.datatype != "BYTES" for spec in specs):
        matrix = np.empty((rows, len(specs)), dtype=np.result_type(*columns.values()))
        for j, column in enumerate(columns.values()):
            matrix[:, j] = column
        return matrix
    return _pandas().DataFrame(columns, copy=False)


def _cast(name: str, array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` as the spec's dtype when nothing is lost; the same object when it already is."""
    target = numpy_dtype(spec.datatype)
    source = array.dtype
    if source == target:
        return array
    if spec.datatype == "BYTES":
        if source.kind in "US":
            return array.astype(object)
        raise SignatureMismatch(f"input {name!r}: expected BYTES, got {_datatype(source)}")
    if source.kind not in "biuf":
        raise SignatureMismatch(
            f"input {name!r}: expected {spec.datatype}, got {_datatype(source)}"
        )
    if target.kind == "f":
        with np.errstate(over="ignore"):
            result = array.astype(target)
        if source.kind == "f" and source.itemsize > target.itemsize:
            overflow = np.isfinite(array) & ~np.isfinite(result)
            if overflow.any():
                raise SignatureMismatch(
                    f"input {name!r}: a value is out of range for {spec.datatype} "
                    f"(row {_first_row(overflow)})"
                )
        return result
    if target.kind == "b":
        if source.kind != "b":
            wrong = (array != 0) & (array != 1)
            if wrong.any():
                raise SignatureMismatch(
                    f"input {name!r}: expected BOOL, got {_datatype(source)} with values other "
                    f"than 0 and 1 (row {_first_row(wrong)})"
                )
        return array.astype(target)
    if source.kind == "f":
        fractional = ~np.isfinite(array) | (np.trunc(array) != array)
        if fractional.any():
            raise SignatureMismatch(
                f"input {name!r}: expected {spec.datatype}, got {_datatype(source)} with "
                f"non-integer values (row {_first_row(fractional)})"
            )
    low, high = integer_range(target)
    if array.size and not np.can_cast(source, target, "safe"):
        outside = (array < low) | (array > high)
        if outside.any():
            raise SignatureMismatch(
                f"input {name!r}: a value is out of range for {spec.datatype} ({low}..{high}; "
                f"row {_first_row(outside)})"
            )
    return array.astype(target)


def _check_finite(name: str, array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.allow_nan or array.dtype.kind != "f":
        return array
    finite = np.isfinite(array)
    if not finite.all():
        raise SignatureMismatch(
            f"input {name!r} contains NaN or infinity, which this model's signature forbids "
            f"(row {_first_row(~finite)})"
        )
    return array


def _text_column(name: str, column: np.ndarray, *, allow_missing: bool) -> np.ndarray:
    """Strings for a text column: bytes decoded as UTF-8; None/NaN kept where ``allow_missing``."""
    values = column.tolist()
    if set(map(type, values)) <= {str}:
        return column
    result = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise SignatureMismatch(
                    f"input {name!r}: row {index} is not valid UTF-8 text"
                ) from None
        elif value is None or _is_nan(value):
            if not allow_missing:
                raise SignatureMismatch(
                    f"input {name!r} has a missing value, which this model's signature forbids "
                    f"(row {index})"
                )
        elif not isinstance(value, str):
            raise SignatureMismatch(
                f"input {name!r}: expected strings (BYTES), got {type(value).__name__} "
                f"(row {index})"
            )
        result[index] = value
    return result


def _check_names(specs: tuple[TensorSpec, ...], tensors: Mapping[str, np.ndarray]) -> None:
    expected = [spec.name for spec in specs]
    known = set(expected)
    extra = [name for name in tensors if name not in known]
    if extra:
        raise SignatureMismatch(
            f"unexpected input {extra[0]!r}; this model takes: {_listed(expected)}"
        )
    missing = [name for name in expected if name not in tensors]
    if len(missing) == 1:
        raise SignatureMismatch(f"missing input {missing[0]!r}")
    if missing:
        raise SignatureMismatch(f"missing inputs {_listed(missing, quote=True)}")


def _check_unique(names: list[str], role: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInput(f"duplicate {role} name {name!r}")
        seen.add(name)


def _listed(names: Sequence[str], *, quote: bool = False) -> str:
    shown = [repr(name) if quote else name for name in names[:LISTED_NAMES]]
    more = len(names) - LISTED_NAMES
    return ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


def _first_row(mask: np.ndarray) -> int:
    return int(np.unravel_index(int(np.argmax(mask)), mask.shape)[0])


def _datatype(dtype: np.dtype[Any]) -> str:
    try:
        return v2_datatype(dtype)
    except InvalidInput:
        return str(dtype)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value


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


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise MissingExtra("pandas", "pandas") from None
