"""The rows an optimized model must answer as its source does: the version's reference rows and
generated edge rows.

Registration keeps no reference rows, only their profile (``monitoring.profile``): each numeric
feature's evenly spaced sample of the reference. From it come the quantile rows (row ``i`` takes
every feature's value at the same quantile) and as many shuffled rows (each feature's sample in a
seeded order of its own, so features vary independently, as a tree's splits need). Reference data
passed by the operator is used as it is instead. Edge rows start from the median row and set one
feature at a time to an extreme: its minimum and maximum, beyond them, zero, the type's largest
values, and NaN and infinity where the signature allows them. A tree ensemble's split rows
(``splits``) set one feature at a time at each threshold and one step either side of it. A tensor
model's rows are its reference tensors and, per input, that input filled with each extreme.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dockyard.datatypes import numpy_dtype
from dockyard.errors import OptimizationRefused
from dockyard.registry.records import ModelVersion, Signature, TensorSpec
from dockyard.registry.signatures import prepare_input, reference_input

MAX_REFERENCE_ROWS = 5_000
SEED = 0
HUGE = 1e30
"""A feature value far beyond any training range that float32 still holds."""


@dataclass(frozen=True)
class ProofRows:
    """Model inputs (as a request's are prepared) and what each row is, for the refusal's text."""

    inputs: Any
    kinds: tuple[str, ...]

    def row(self, index: int) -> Any:
        """The input of one row (to show the worst)."""
        if isinstance(self.inputs, Mapping):
            return {name: np.asarray(value)[index].tolist() for name, value in self.inputs.items()}
        return np.asarray(self.inputs)[index].tolist()


def proof_rows(
    version: ModelVersion, reference: Any = None, splits: Mapping[int, np.ndarray] | None = None
) -> ProofRows:
    """The reference rows (``reference`` when given, else rebuilt from the version's profile),
    the edge rows, and for a tree ensemble three rows per split threshold of ``splits`` (feature
    index → thresholds: the median row with that feature at the threshold and one step either
    side); OptimizationRefused for a version that has neither reference nor profile."""
    signature = version.signature
    if not signature.tabular:
        return _tensor_rows(version, reference)
    categorical = [spec.name for spec in signature.inputs if spec.categorical]
    if categorical:
        raise OptimizationRefused(
            f"{version.ref} has the categorical input {categorical[0]!r}; the converters take "
            "numeric tables only"
        )
    samples = _samples(version, reference)
    base = {spec.name: _median(samples[spec.name]) for spec in signature.inputs}
    columns: dict[str, list[Any]] = {spec.name: [] for spec in signature.inputs}
    kinds: list[str] = []
    reference_rows = _reference_columns(signature, samples)
    count = len(next(iter(reference_rows.values())))
    for name, values in reference_rows.items():
        columns[name].extend(values)
    kinds.extend(["reference"] * count)
    for spec in signature.inputs:
        for label, value in _edges(spec, samples[spec.name]):
            for name in columns:
                columns[name].append(value if name == spec.name else base[name])
            kinds.append(f"edge: {spec.name} = {label}")
    for index, thresholds in sorted((splits or {}).items()):
        if not 0 <= index < len(signature.inputs):
            continue
        spec = signature.inputs[index]
        if numpy_dtype(spec.datatype).kind != "f":
            continue
        for threshold in thresholds.tolist():
            for side, value in _around(threshold):
                for name in columns:
                    columns[name].append(value if name == spec.name else base[name])
                kinds.append(f"split: {spec.name} {side} {threshold!r}")
    tensors = {
        spec.name: np.asarray(columns[spec.name], dtype=_column_dtype(spec))
        for spec in signature.inputs
    }
    return ProofRows(prepare_input(signature, tensors), tuple(kinds))


def _samples(version: ModelVersion, reference: Any) -> dict[str, np.ndarray]:
    """Each feature's values: the reference's (up to ``MAX_REFERENCE_ROWS`` rows), else its
    profile sample."""
    signature = version.signature
    if reference is not None:
        table = np.asarray(reference_input(signature, reference, MAX_REFERENCE_ROWS))
        return {spec.name: table[:, j] for j, spec in enumerate(signature.inputs)}
    features: Mapping[str, Any] = (version.profile or {}).get("features", {})
    missing = [spec.name for spec in signature.inputs if spec.name not in features]
    if missing:
        raise OptimizationRefused(
            f"{version.ref} has no reference profile for {missing[0]!r}; pass its reference "
            "data (--reference)"
        )
    return {
        spec.name: np.asarray(features[spec.name].get("sample", []), dtype=np.float64)
        for spec in signature.inputs
    }


def _reference_columns(signature: Signature, samples: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Reference rows as they were given, or the profile's quantile rows and shuffled rows."""
    lengths = {len(values) for values in samples.values()}
    if len(lengths) == 1 and not _from_profile(samples):
        return {name: list(values) for name, values in samples.items()}
    rows = max(max(lengths), 1)
    rng = np.random.default_rng(SEED)
    columns = {}
    for spec in signature.inputs:
        values = samples[spec.name]
        if len(values) == 0:
            values = np.zeros(1)
        spread = values[np.linspace(0, len(values) - 1, rows).round().astype(np.int64)]
        columns[spec.name] = [*spread, *rng.permutation(spread)]
    return columns


def _from_profile(samples: Mapping[str, np.ndarray]) -> bool:
    """Profile samples are sorted (order statistics); reference data is not, in general."""
    return all(bool(np.all(np.diff(values) >= 0)) for values in samples.values())


def _around(threshold: float) -> list[tuple[str, float]]:
    """A threshold and the nearest float64 values either side of it."""
    return [
        ("just below", float(np.nextafter(threshold, -np.inf))),
        ("at", threshold),
        ("just above", float(np.nextafter(threshold, np.inf))),
    ]


def _median(values: np.ndarray) -> float:
    present = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    return float(np.median(present)) if len(present) else 0.0


def _edges(spec: TensorSpec, values: np.ndarray) -> list[tuple[str, Any]]:
    """(label, value) of each edge of one feature."""
    dtype: np.dtype[Any] = numpy_dtype(spec.datatype)
    present = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    low = float(np.min(present)) if len(present) else 0.0
    high = float(np.max(present)) if len(present) else 0.0
    span = max(high - low, 1.0)
    edges: list[tuple[str, Any]] = [
        ("min", low),
        ("max", high),
        ("below min", low - span),
        ("above max", high + span),
        ("zero", 0.0),
    ]
    if dtype.kind == "f":
        biggest = min(HUGE, float(np.finfo(dtype).max))
        edges += [("-huge", -biggest), ("+huge", biggest)]
        if spec.allow_nan:
            edges += [("NaN", float("nan")), ("-inf", float("-inf")), ("+inf", float("inf"))]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        edges = [(label, int(np.clip(round(value), info.min, info.max))) for label, value in edges]
    elif dtype.kind == "b":
        edges = [("false", False), ("true", True)]
    return edges


def _column_dtype(spec: TensorSpec) -> np.dtype[Any]:
    dtype = numpy_dtype(spec.datatype)
    return np.dtype(np.float64) if dtype.kind == "f" else dtype


def _tensor_rows(version: ModelVersion, reference: Any) -> ProofRows:
    """A tensor model's rows: its reference tensors (given: the profile keeps none of a wider
    tensor), then per input one edge row per extreme, the input filled with it and the other
    inputs as in the first reference row."""
    signature = version.signature
    if reference is None:
        raise OptimizationRefused(
            f"{version.ref} takes named tensors, of which the profile keeps no rows; pass its "
            "reference data (--reference)"
        )
    given = reference_input(signature, reference, MAX_REFERENCE_ROWS)
    assert isinstance(given, Mapping)  # a tensor signature's input: a dict of named arrays
    tensors = {str(name): np.asarray(value) for name, value in given.items()}
    count = len(next(iter(tensors.values())))
    parts = {name: [value] for name, value in tensors.items()}
    kinds = ["reference"] * count
    for spec in signature.inputs:
        dtype: np.dtype[Any] = numpy_dtype(spec.datatype)
        for label, value in _tensor_edges(spec, dtype):
            for name, value_of in tensors.items():
                row = value_of[:1].copy()
                if name == spec.name:
                    row[...] = value
                parts[name].append(row)
            kinds.append(f"edge: {spec.name} = {label}")
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    return ProofRows(prepare_input(signature, joined), tuple(kinds))


def _tensor_edges(spec: TensorSpec, dtype: np.dtype[Any]) -> list[tuple[str, Any]]:
    if dtype.kind == "f":
        biggest = min(HUGE, float(np.finfo(dtype).max))
        edges: list[tuple[str, Any]] = [("zero", 0.0), ("-huge", -biggest), ("+huge", biggest)]
        if spec.allow_nan:
            edges += [("NaN", float("nan")), ("-inf", float("-inf")), ("+inf", float("inf"))]
        return edges
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return [("zero", 0), ("min", int(info.min)), ("max", int(info.max))]
    return [("false", False), ("true", True)] if dtype.kind == "b" else []
