"""Whether a converted model answers as its source: every output the same name, dtype kind and
shape, every number within the tolerance and every label equal, on every proof row.

A number's error is its absolute difference, relative to the source's value where that exceeds 1
in magnitude (a regressor predicting in the thousands is held to the same digits as a probability).
NaN against NaN is no error; NaN against a number is an infinite one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dockyard.datatypes import v2_datatype


@dataclass(frozen=True)
class Comparison:
    """The outcome over all rows: the largest error and where it is, and the first label or
    structural difference, if any."""

    max_error: float
    worst_row: int | None
    worst_output: str | None
    mismatch: str | None
    """Why the outputs cannot be equal whatever the tolerance; None when they can."""

    def passes(self, tolerance: float) -> bool:
        return self.mismatch is None and self.max_error <= tolerance


def compare(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> Comparison:
    """Compare the source's outputs (``expected``) with the converted model's on the same rows."""
    worst = Comparison(0.0, None, None, None)
    for name, want in expected.items():
        want = np.asarray(want)
        if name not in actual:
            return Comparison(np.inf, None, name, f"output {name!r} is missing")
        got = np.asarray(actual[name])
        if got.shape != want.shape:
            return Comparison(
                np.inf,
                None,
                name,
                f"output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}",
            )
        if v2_datatype(got.dtype) != v2_datatype(want.dtype):
            return Comparison(
                np.inf,
                None,
                name,
                f"output {name!r} is {v2_datatype(got.dtype)}, expected {v2_datatype(want.dtype)}",
            )
        if want.dtype.kind != "f":
            differ = np.flatnonzero(_rows(got != want))
            if len(differ):
                row = int(differ[0])
                return Comparison(
                    np.inf,
                    row,
                    name,
                    f"output {name!r} differs on row {row}: {_value(got[row])} instead of "
                    f"{_value(want[row])}",
                )
            continue
        errors = _row_errors(want.astype(np.float64), got.astype(np.float64))
        row = int(np.argmax(errors)) if len(errors) else 0
        if len(errors) and errors[row] > worst.max_error:
            worst = Comparison(float(errors[row]), row, name, None)
    return worst


def _row_errors(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The largest error per row."""
    both_nan = np.isnan(want) & np.isnan(got)
    same_inf = np.isinf(want) & (want == got)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    error = np.where(both_nan | same_inf, 0.0, error)
    error = np.where(np.isnan(error), np.inf, error)
    return error.reshape(len(error), -1).max(axis=1) if error.ndim > 1 else error


def _rows(differs: np.ndarray) -> np.ndarray:
    flat = np.asarray(differs, dtype=bool)
    return np.asarray(flat.reshape(len(flat), -1).any(axis=1)) if flat.ndim > 1 else flat


def _value(value: object) -> str:
    return str(np.asarray(value).tolist())
