"""The reference profile: what a version's reference data, and the model's predictions on it,
looked like at registration. Live drift (``monitoring.drift``) compares the prediction log with it.

A profile is plain JSON (stored in ``versions.profile``) and bounded in size, whatever the
reference's row count: per numeric column 10 bins cut at the reference's deciles and their counts,
quantiles, min/max, mean/std, the missing rate and a sample of at most ``SAMPLE_MAX`` values for
the Kolmogorov-Smirnov test (evenly spaced order statistics of the reference: a deterministic
summary of its distribution, not random draws); per categorical column the ``TOP_CATEGORIES`` most
frequent values and their counts, the count of the rest and the missing rate. The samples of all
numeric columns share a budget (``SAMPLE_BUDGET`` values), so a wide model gets smaller samples
rather than a profile that grows with the product of features and sample size; about 0.5 MB for
500 features.

Inputs are the signature's features (a tensor model's per-row scalar inputs; wider tensors are
listed under ``skipped``), named as the prediction log names them: ``input.<name>``. Outputs are
profiled from the predictions on the reference rows: a per-row scalar as ``output.<name>``, each
column of a ``[N, C]`` output (a classifier's probabilities) as ``output.<name>[j]``.

Missing means null, NaN or infinity for a number (no bin can hold it), null or "" for a category.
Numbers are numeric, unless the signature calls the feature categorical; strings, booleans and
integer outputs (class labels) are categorical.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from dockyard.registry.records import Signature, TensorSpec

PROFILE_FORMAT = 1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10
SAMPLE_MAX = 1000
SAMPLE_MIN = 50
SAMPLE_BUDGET = 20_000
"""Sample values of all numeric columns together; each gets an equal share within
``SAMPLE_MIN``..``SAMPLE_MAX``."""
TOP_CATEGORIES = 50
CATEGORY_CHARS = 128
"""Longer category values are counted with the rest, not listed (free text is no category)."""
OUTPUT_COLUMNS = 32
"""The widest ``[N, C]`` output profiled column by column."""
SIGNIFICANT_DIGITS = 7
"""Sample values and bin edges are stored to float32 precision, which halves their JSON."""
CATEGORICAL_TYPES = ("BYTES", "BOOL")
INPUT_PREFIX = "input."
OUTPUT_PREFIX = "output."


def capture_profile(
    reference: Any, signature: Signature, predictions: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The profile of ``reference`` (the registration's reference data: a 2-D array, a DataFrame,
    or a tensor model's array or dict of arrays) read through ``signature``, and of
    ``predictions`` (the model's outputs on reference rows, each with one entry per row)."""
    skipped: dict[str, str] = {}
    inputs = _input_columns(reference, signature, skipped)
    outputs = _output_columns(predictions, skipped)
    numeric = sum(1 for _, values, categorical in [*inputs, *outputs] if not categorical)
    sample_size = min(SAMPLE_MAX, max(SAMPLE_MIN, SAMPLE_BUDGET // max(numeric, 1)))
    features = {
        name: _entry(INPUT_PREFIX + name, None, values, categorical, sample_size)
        for name, values, categorical in inputs
    }
    outputs_profile = {}
    for key, values, categorical in outputs:
        column, index = log_column(key)
        outputs_profile[key] = _entry(column, index, values, categorical, sample_size)
    return {
        "format": PROFILE_FORMAT,
        "rows": _row_count(inputs),
        "prediction_rows": _row_count(outputs),
        "features": features,
        "outputs": outputs_profile,
        "skipped": skipped,
    }


def log_column(key: str) -> tuple[str, int | None]:
    """The prediction log's column for an output's profile key, and the element of its list that
    holds it (None: the column is a scalar per row): ``output.proba[1]`` → (``output.proba``,
    1)."""
    if key.endswith("]") and "[" in key:
        column, _, index = key[:-1].rpartition("[")
        return column, int(index)
    return key, None


def numeric_values(values: Any) -> np.ndarray:
    """A column as float64, every missing value (null, NaN, infinity) as NaN."""
    if _is_series(values):
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    array = np.asarray(values)
    if array.dtype.kind == "O":
        array = np.array([np.nan if v is None else v for v in array.tolist()], dtype=np.float64)
    array = array.astype(np.float64, copy=False)
    return np.where(np.isfinite(array), array, np.nan)


def category_text(value: Any) -> str | None:
    """A category value as the profile keeps it (None: missing): text as is, bytes decoded,
    numbers and booleans as Python prints them, so a reference value and a logged one that are
    equal have the same text."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    text = str(value)
    return text or None


def _entry(
    column: str, index: int | None, values: Any, categorical: bool, sample_size: int
) -> dict[str, Any]:
    summary = _categorical(values) if categorical else _numeric(values, sample_size)
    return {"column": column, "index": index, **summary}


def _numeric(values: Any, sample_size: int) -> dict[str, Any]:
    array = numeric_values(values)
    present = np.sort(array[~np.isnan(array)])
    summary: dict[str, Any] = {
        "kind": "numeric",
        "count": len(array),
        "missing": _share(len(array) - len(present), len(array)),
    }
    if not len(present):
        return {**summary, "min": None, "max": None, "edges": [], "counts": [0], "sample": []}
    picks = np.linspace(0, len(present) - 1, min(sample_size, len(present))).round()
    sample = np.array(_rounded(present[picks.astype(np.int64)]))
    # Inner edges at the sample's deciles: values of the reference, so each bin [e_i, e_i+1)
    # holds at least one reference value; ties collapse bins (a 0/1 feature has 3 bins).
    at = (np.arange(1, BINS) / BINS * (len(sample) - 1)).round().astype(np.int64)
    edges = np.unique(sample[at])
    below = np.searchsorted(present, edges, side="left")
    counts = np.diff(np.concatenate(([0], below, [len(present)])))
    return {
        **summary,
        "min": float(present[0]),
        "max": float(present[-1]),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "quantiles": dict(
            zip(
                [f"{q:g}" for q in QUANTILES],
                _rounded(np.quantile(present, QUANTILES)),
                strict=True,
            )
        ),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "sample": sample.tolist(),
    }


def _categorical(values: Any) -> dict[str, Any]:
    texts = [category_text(value) for value in _objects(values)]
    counter = Counter(text for text in texts if text is not None)
    present = sum(counter.values())
    listed = [(text, n) for text, n in counter.most_common() if len(text) <= CATEGORY_CHARS]
    listed = listed[:TOP_CATEGORIES]
    return {
        "kind": "categorical",
        "count": len(texts),
        "missing": _share(len(texts) - present, len(texts)),
        "values": [text for text, _ in listed],
        "counts": [n for _, n in listed],
        "other": present - sum(n for _, n in listed),
        "distinct": len(counter),
    }


def _objects(values: Any) -> list[Any]:
    """A column's values as Python objects (a pandas column's missing values as None)."""
    if _is_series(values):
        return list(values.to_numpy(dtype=object, na_value=None))
    return list(np.asarray(values, dtype=object).tolist())


def _input_columns(
    reference: Any, signature: Signature, skipped: dict[str, str]
) -> list[tuple[str, Any, bool]]:
    """(feature name, its reference values, whether it is categorical) for each profiled input."""
    frame = _as_frame(reference)
    columns: list[tuple[str, Any, bool]] = []
    matrix = None
    if signature.tabular and frame is None:
        matrix = np.asarray(reference)
        if matrix.ndim != 2 or matrix.shape[1] != len(signature.inputs):
            skipped["inputs"] = (
                f"the reference data's shape {list(matrix.shape)} does not match the "
                f"{len(signature.inputs)} features of the signature"
            )
            return []
    for position, spec in enumerate(signature.inputs):
        if spec.shape != (-1,):
            skipped[INPUT_PREFIX + spec.name] = (
                f"shape {list(spec.shape)}: only one value per row is profiled"
            )
            continue
        if matrix is not None:
            values: Any = matrix[:, position]
        elif frame is not None:
            if spec.name not in frame.columns:
                skipped[INPUT_PREFIX + spec.name] = "not a column of the reference data"
                continue
            values = frame[spec.name]
        elif isinstance(reference, Mapping):
            if spec.name not in reference:
                skipped[INPUT_PREFIX + spec.name] = "not in the reference data"
                continue
            values = np.asarray(reference[spec.name])
        else:
            values = np.asarray(reference)
        if matrix is not None and matrix.dtype.kind == "O":
            values = np.array(values.tolist())  # the dtype numpy infers for this column
        columns.append((spec.name, values, _is_categorical(spec, values)))
    return columns


def _output_columns(
    predictions: Mapping[str, np.ndarray], skipped: dict[str, str]
) -> list[tuple[str, Any, bool]]:
    """(profile key, values, whether categorical) for each profiled output column."""
    columns: list[tuple[str, Any, bool]] = []
    for name, output in predictions.items():
        array = np.asarray(output)
        key = OUTPUT_PREFIX + name
        categorical = array.dtype.kind in "OUSbiu"
        if array.ndim == 1:
            columns.append((key, array, categorical))
        elif array.ndim == 2 and array.shape[1] <= OUTPUT_COLUMNS:
            columns.extend((f"{key}[{j}]", array[:, j], categorical) for j in range(array.shape[1]))
        else:
            skipped[key] = (
                f"shape {list(array.shape[1:])} per row: only a value or up to {OUTPUT_COLUMNS} "
                "columns per row are profiled"
            )
    return columns


def _is_categorical(spec: TensorSpec, values: Any) -> bool:
    if spec.categorical or spec.datatype in CATEGORICAL_TYPES:
        return True
    return np.asarray(values).dtype.kind in "OUSb"


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{value:.{SIGNIFICANT_DIGITS}g}") for value in values.tolist()]


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _row_count(columns: list[tuple[str, Any, bool]]) -> int:
    return len(columns[0][1]) if columns else 0


def _is_series(values: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(values, pandas.Series)


def _as_frame(reference: Any) -> Any:
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(reference, pandas.DataFrame):
        return reference
    return None
