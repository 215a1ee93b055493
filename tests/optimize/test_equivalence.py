"""Comparing a converted model's outputs with its source's: tolerance, labels, NaN, structure."""

from __future__ import annotations

import numpy as np
import pytest

from dockyard.optimize.equivalence import compare

PROBA = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])


def test_equal_outputs_have_no_error() -> None:
    result = compare({"p": PROBA}, {"p": PROBA.copy()})
    assert result.max_error == 0.0
    assert result.passes(0.0)


def test_the_worst_row_and_output_are_named() -> None:
    moved = PROBA.copy()
    moved[1, 0] += 1e-4
    moved[2, 1] += 1e-7
    result = compare(
        {"label": np.array([1, 0, 0]), "p": PROBA}, {"label": np.array([1, 0, 0]), "p": moved}
    )
    assert (result.worst_row, result.worst_output) == (1, "p")
    assert result.max_error == pytest.approx(1e-4)
    assert not result.passes(1e-6)
    assert result.passes(1e-3)


def test_large_values_are_held_to_relative_error() -> None:
    want = np.array([1e6, 2.0])
    result = compare({"v": want}, {"v": want + np.array([0.5, 0.0])})
    assert result.max_error == pytest.approx(0.5e-6)


def test_nan_matches_nan_only() -> None:
    want = np.array([np.nan, 1.0, np.inf])
    assert compare({"v": want}, {"v": want.copy()}).max_error == 0.0
    result = compare({"v": want}, {"v": np.array([0.0, 1.0, np.inf])})
    assert result.max_error == np.inf
    assert result.worst_row == 0


def test_a_different_label_fails_whatever_the_tolerance() -> None:
    result = compare({"label": np.array(["a", "b"], dtype=object)}, {"label": np.array(["a", "c"])})
    assert result.mismatch == "output 'label' differs on row 1: c instead of b"
    assert not result.passes(1e9)


@pytest.mark.parametrize(
    ("actual", "mismatch"),
    [
        ({}, "output 'v' is missing"),
        ({"v": np.zeros((3, 1))}, "output 'v' has shape [3, 1], expected [3]"),
        ({"v": np.zeros(3, dtype=np.float32)}, "output 'v' is FP32, expected FP64"),
    ],
    ids=["missing", "shape", "datatype"],
)
def test_a_structural_difference_fails(actual: dict[str, np.ndarray], mismatch: str) -> None:
    result = compare({"v": np.zeros(3)}, actual)
    assert result.mismatch == mismatch
