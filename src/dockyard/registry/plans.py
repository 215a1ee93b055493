"""Input plans: request checks for one signature, with what depends only on it worked out once.

A server builds one ``InputPlan`` per deployed version, so a request pays only for the checks on
its own arrays (pure numpy; pandas is imported only when a DataFrame is built).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dockyard.datatypes import integer_range, numpy_dtype, v2_datatype
from dockyard.errors import InvalidInput, MissingExtra, PayloadTooLarge, SignatureMismatch
from dockyard.registry.records import Signature, TensorSpec

LISTED_NAMES = 10
"""Error messages list at most this many input names."""


class InputPlan:
    """``prepare_input`` for one signature, its names, dtypes and NaN rules worked out once.

    ``prepare(tensors)`` checks request tensors and returns what the runtime takes, or raises
    SignatureMismatch naming the input (the contract is ``registry.signatures.prepare_input``'s).
    ``max_rows`` (a server's ``max_rows`` setting; None: no limit) bounds the rows (first
    dimension) of a request: more raise PayloadTooLarge. It is checked here, where each path
    reads the row count anyway, so it costs one comparison.
    """

    __slots__ = (
        "_columns",
        "_features",
        "_feature_names",
        "_forbidden",
        "_forbidden_index",
        "_forbids_all",
        "_has_text",
        "_matrix_datatype",
        "_matrix_target",
        "_max_rows",
        "_mixed_checks",
        "_mixed_datatypes",
        "_mixed_target",
        "_specs",
        "_tabular",
        "_targets",
        "_text",
    )

    def __init__(self, signature: Signature, max_rows: int | None = None) -> None:
        self._max_rows = sys.maxsize if max_rows is None else max_rows
        specs = signature.inputs
        self._specs = specs
        self._tabular = signature.tabular
        self._features = [spec.name for spec in specs]
        self._feature_names = frozenset(self._features)
        datatypes = list(dict.fromkeys(spec.datatype for spec in specs))
        resolved = {datatype: _target(datatype) for datatype in datatypes}
        self._targets = tuple(resolved[spec.datatype] for spec in specs)
        self._columns = tuple(zip(specs, self._targets, strict=True))
        self._text = [spec.name for spec in specs if spec.datatype == "BYTES"]
        self._has_text = bool(self._text)
        self._mixed_datatypes = datatypes if len(datatypes) != 1 else None
        known = [target for target in self._targets if target is not None]
        self._mixed_target = (
            np.result_type(*known) if len(known) == len(specs) > 1 and len(datatypes) > 1 else None
        )
        self._matrix_datatype = datatypes[0] if datatypes else ""
        self._matrix_target = self._targets[0] if specs else None
        self._mixed_checks = [
            (j, spec, target)
            for j, (spec, target) in enumerate(self._columns)
            if target is None or target.kind != "f"
        ]
        self._forbidden = [j for j, spec in enumerate(specs) if not spec.allow_nan]
        self._forbids_all = len(self._forbidden) == len(specs)
        self._forbidden_index = None if self._forbids_all else np.array(self._forbidden, np.intp)

    def prepare(self, tensors: Mapping[str, np.ndarray]) -> object:
        """Check request tensors against the signature; return what the runtime takes, or raise."""
        if not self._tabular:
            return self._prepare_tensors(tensors)
        if len(tensors) == 1:
            ((name, array),) = tensors.items()
            if name not in self._feature_names:
                return self._prepare_matrix(name, array)
        return self._prepare_columns(tensors)

    def _prepare_tensors(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_names(tensors)
        result: dict[str, np.ndarray] = {}
        empty = False
        for spec, target in self._columns:
            array = tensors[spec.name]
            if array.ndim != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise SignatureMismatch(
                    f"input {spec.name!r}: expected shape {list(spec.shape)}, "
                    f"got {list(array.shape)}"
                )
            if array.ndim and array.shape[0] > self._max_rows:
                raise self._too_many(array.shape[0])
            if not array.size:
                empty = True
            cast = _cast(spec.name, array, spec.datatype, target)
            result[spec.name] = _check_finite(spec.name, cast, spec)
        if empty:
            _check_no_rows(tensors)
        return result

    def _prepare_matrix(self, name: str, array: np.ndarray) -> np.ndarray:
        width = len(self._specs)
        if array.ndim != 2 or array.shape[1] != width:
            raise SignatureMismatch(
                f"input {name!r}: expected one [N, {width}] tensor or one tensor per feature "
                f"({listed(self._features)}); got shape {list(array.shape)}"
            )
        if array.shape[0] > self._max_rows:
            raise self._too_many(array.shape[0])
        if self._has_text:
            raise SignatureMismatch(
                f"input {name!r}: features {listed(self._text)} are strings, "
                "so send one tensor per feature"
            )
        if self._mixed_datatypes is None:
            target = self._matrix_target
            # the usual case, FP64 in and FP64 expected, needs no cast: skip the call
            result = (
                array
                if array.dtype is target
                else _cast(name, array, self._matrix_datatype, target)
            )
        else:
            if array.dtype.kind not in "biuf":
                raise SignatureMismatch(
                    f"input {name!r}: expected numbers, got {_datatype(array.dtype)}"
                )
            for j, spec, target in self._mixed_checks:
                _cast(spec.name, array[:, j], spec.datatype, target)  # checks: integral, range, 0/1
            target = self._mixed_target
            if target is None:
                target = np.result_type(*(numpy_dtype(dt) for dt in self._mixed_datatypes))
            result = array.astype(target, copy=False)
        if result.dtype.kind == "f" and self._forbidden:
            block = result if self._forbids_all else result[:, self._forbidden_index]
            finite = np.isfinite(block)
            if np.count_nonzero(finite) != finite.size:  # cheaper than finite.all()
                row, column = np.unravel_index(int(np.argmin(finite)), finite.shape)
                raise SignatureMismatch(
                    f"input {name!r} contains NaN or infinity in feature "
                    f"{self._specs[self._forbidden[int(column)]].name!r}, which this model's "
                    f"signature forbids (row {int(row)})"
                )
        return result

    def _prepare_columns(self, tensors: Mapping[str, np.ndarray]) -> object:
        self._check_names(tensors)
        columns: dict[str, np.ndarray] = {}
        rows, first = -1, ""
        for spec, target in self._columns:
            array = tensors[spec.name]
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            elif array.ndim != 1:
                raise SignatureMismatch(
                    f"input {spec.name!r}: expected shape [-1] or [-1, 1], got {list(array.shape)}"
                )
            if rows < 0:
                rows, first = len(array), spec.name
                if rows > self._max_rows:
                    raise self._too_many(rows)
            elif len(array) != rows:
                raise SignatureMismatch(
                    f"input {spec.name!r} has {len(array)} rows but input {first!r} has {rows}"
                )
            column = _check_finite(spec.name, _cast(spec.name, array, spec.datatype, target), spec)
            if spec.datatype == "BYTES":
                column = _text_column(spec.name, column, allow_missing=spec.allow_nan)
            columns[spec.name] = column
        if not self._has_text:
            matrix = np.empty((rows, len(self._specs)), dtype=np.result_type(*columns.values()))
            for j, column in enumerate(columns.values()):
                matrix[:, j] = column
            return matrix
        return _pandas().DataFrame(columns, copy=False)

    def _too_many(self, rows: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request has {rows} rows; the limit is {self._max_rows} (max_rows setting)"
        )

    def _check_names(self, tensors: Mapping[str, np.ndarray]) -> None:
        known = self._feature_names
        extra = [name for name in tensors if name not in known]
        if extra:
            raise SignatureMismatch(
                f"unexpected input {extra[0]!r}; this model takes: {listed(self._features)}"
            )
        if len(tensors) == len(known):
            return  # no extra names and as many as expected: none is missing
        missing = [name for name in self._features if name not in tensors]
        if len(missing) == 1:
            raise SignatureMismatch(f"missing input {missing[0]!r}")
        if missing:
            raise SignatureMismatch(f"missing inputs {listed(missing, quote=True)}")


def _check_no_rows(tensors: Mapping[str, np.ndarray]) -> None:
    """Tensors of which one holds no values must all be an empty batch: no rows (a zero first
    dimension), the only zero-sized input a model is sure to make sense of. A model may refuse
    zero rows, so the caller answers such a batch without it; any other zero is refused here."""
    rows = {name: array.shape[0] if array.ndim else 1 for name, array in tensors.items()}
    for name, array in tensors.items():
        if not array.size and rows[name]:
            raise SignatureMismatch(
                f"input {name!r}: shape {list(array.shape)} holds no values; only the batch "
                "(first) dimension may be 0"
            )
    full = [name for name, count in rows.items() if count]
    if full:
        empty = next(name for name, count in rows.items() if not count)
        raise SignatureMismatch(
            f"input {empty!r} has no rows but input {full[0]!r} has {rows[full[0]]}; "
            "send rows in every input or in none"
        )


def no_rows(spec: TensorSpec) -> np.ndarray:
    """An empty batch of ``spec``: no rows, its other dimensions as the signature fixes them (0
    where it leaves them free). An input of a request with no instances, and an output of the
    answer to it (empty batches are answered without the model, which may refuse zero rows)."""
    shape = (0, *(max(dim, 0) for dim in spec.shape[1:]))
    return np.empty(shape, dtype=numpy_dtype(spec.datatype))


def listed(names: Sequence[str], *, quote: bool = False) -> str:
    """Names for an error message, at most ``LISTED_NAMES`` of them."""
    shown = [repr(name) if quote else name for name in names[:LISTED_NAMES]]
    more = len(names) - LISTED_NAMES
    return ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


def is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value


def _target(datatype: str) -> np.dtype[Any] | None:
    """The numpy dtype a datatype casts to; None for an unknown one (``_cast`` then raises)."""
    try:
        return numpy_dtype(datatype)
    except InvalidInput:
        return None


def _cast(name: str, array: np.ndarray, datatype: str, target: np.dtype[Any] | None) -> np.ndarray:
    """``array`` as ``target`` when nothing is lost; the same object when it already is."""
    if target is None:
        target = numpy_dtype(datatype)
    source = array.dtype
    if source == target:
        return array
    if datatype == "BYTES":
        if source.kind in "US":
            return array.astype(object)
        raise SignatureMismatch(f"input {name!r}: expected BYTES, got {_datatype(source)}")
    if source.kind not in "biuf":
        raise SignatureMismatch(f"input {name!r}: expected {datatype}, got {_datatype(source)}")
    if target.kind == "f":
        with np.errstate(over="ignore"):
            result = array.astype(target)
        if source.kind == "f" and source.itemsize > target.itemsize:
            overflow = np.isfinite(array) & ~np.isfinite(result)
            if overflow.any():
                raise SignatureMismatch(
                    f"input {name!r}: a value is out of range for {datatype} "
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
                f"input {name!r}: expected {datatype}, got {_datatype(source)} with "
                f"non-integer values (row {_first_row(fractional)})"
            )
    low, high = integer_range(target)
    if array.size and not np.can_cast(source, target, "safe"):
        outside = (array < low) | (array > high)
        if outside.any():
            raise SignatureMismatch(
                f"input {name!r}: a value is out of range for {datatype} ({low}..{high}; "
                f"row {_first_row(outside)})"
            )
    return array.astype(target)


def _check_finite(name: str, array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.allow_nan or array.dtype.kind != "f":
        return array
    finite = np.isfinite(array)
    if np.count_nonzero(finite) != finite.size:
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
        elif value is None or is_nan(value):
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


def _first_row(mask: np.ndarray) -> int:
    return int(np.unravel_index(int(np.argmax(mask)), mask.shape)[0])


def _datatype(dtype: np.dtype[Any]) -> str:
    try:
        return v2_datatype(dtype)
    except InvalidInput:
        return str(dtype)


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise MissingExtra("pandas", "pandas") from None
