"""An InputPlan is built once per signature and then checks any number of requests."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dockyard.errors import SignatureMismatch
from dockyard.registry.plans import InputPlan, listed, no_rows
from dockyard.registry.records import Signature, TensorSpec


def tabular(*specs: TensorSpec) -> Signature:
    return Signature(inputs=specs, outputs=(TensorSpec("label", "INT64", (-1,)),), tabular=True)


def feature(name: str, datatype: str = "FP64", **flags: bool) -> TensorSpec:
    return TensorSpec(name, datatype, (-1,), **flags)


def raises(message: str) -> Any:
    return pytest.raises(SignatureMismatch, match="^" + re.escape(message))


PARTLY_NAN = tabular(feature("a"), feature("b", allow_nan=True), feature("c"))
MIXED = tabular(feature("age", "INT64"), feature("income", allow_nan=True), feature("flag", "BOOL"))


def test_one_plan_checks_many_requests_and_does_not_copy_a_fitting_block() -> None:
    plan = InputPlan(PARTLY_NAN)
    for rows in (1, 3, 7):
        block = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3)
        assert plan.prepare({"input-0": block}) is block


def test_a_failed_request_leaves_the_plan_usable() -> None:
    plan = InputPlan(PARTLY_NAN)
    with raises("input 'x' contains NaN or infinity in feature 'c', which this model's"):
        plan.prepare({"x": np.array([[1.0, np.nan, 2.0], [1.0, 2.0, np.inf]])})
    good = np.array([[1.0, np.nan, 2.0]])
    assert plan.prepare({"x": good}) is good


def test_mixed_features_are_checked_column_by_column_and_widened_once() -> None:
    plan = InputPlan(MIXED)
    result = plan.prepare({"x": np.array([[30, 1, 1], [40, 2, 0]], dtype=np.int32)})
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    with raises("input 'flag': expected BOOL, got INT32 with values other than 0 and 1 (row 0)"):
        plan.prepare({"x": np.array([[30, 1, 2]], dtype=np.int32)})


def test_columns_are_stacked_or_made_a_dataframe() -> None:
    numbers = InputPlan(tabular(feature("a"), feature("b", "INT64")))
    stacked = numbers.prepare({"b": np.array([1, 2]), "a": np.array([0.5, 1.5])})
    np.testing.assert_array_equal(stacked, [[0.5, 1.0], [1.5, 2.0]])
    text = InputPlan(tabular(feature("a"), feature("city", "BYTES", categorical=True)))
    frame = text.prepare({"a": np.array([1.0]), "city": np.array([b"Oslo"], dtype=object)})
    assert isinstance(frame, pd.DataFrame)
    assert frame["city"].tolist() == ["Oslo"]


def test_names_are_checked_against_the_signature() -> None:
    plan = InputPlan(PARTLY_NAN)
    with raises("missing input 'c'"):
        plan.prepare({"a": np.ones(1), "b": np.ones(1)})
    with raises("unexpected input 'd'; this model takes: a, b, c"):
        plan.prepare({"a": np.ones(1), "d": np.ones(1)})


def test_tensor_plans_check_shapes_and_cast() -> None:
    spec = TensorSpec("pixels", "FP32", (-1, 2))
    plan = InputPlan(Signature((spec,), (TensorSpec("y", "FP32", (-1,)),), tabular=False))
    result = plan.prepare({"pixels": np.ones((3, 2))})
    assert isinstance(result, dict)
    assert result["pixels"].dtype == np.float32
    with raises("input 'pixels': expected shape [-1, 2], got [3, 3]"):
        plan.prepare({"pixels": np.ones((3, 3))})


def test_listed_names_at_most_ten() -> None:
    assert listed(["a", "b"], quote=True) == "'a', 'b'"
    assert listed([f"f{i}" for i in range(12)]).endswith("f9, … (2 more)")


TEXT = tabular(feature("a"), feature("city", "BYTES", categorical=True))
SEQUENCES = Signature(
    (TensorSpec("ids", "INT64", (-1, -1)), TensorSpec("mask", "BOOL", (-1, -1))),
    (TensorSpec("y", "FP32", (-1, 2)),),
    tabular=False,
)


@pytest.mark.parametrize(
    ("signature", "tensors"),
    [
        (PARTLY_NAN, {"input-0": np.empty((0, 3))}),
        (MIXED, {"x": np.empty((0, 3), dtype=np.int32)}),
        (PARTLY_NAN, {"a": np.empty(0), "b": np.empty((0, 1)), "c": np.empty(0)}),
        (TEXT, {"a": np.empty(0), "city": np.empty(0, dtype=object)}),
        (SEQUENCES, {"ids": np.empty((0, 0), np.int64), "mask": np.empty((0, 5), np.bool_)}),
    ],
    ids=["matrix", "mixed-matrix", "columns", "dataframe", "tensors"],
)
def test_an_empty_batch_passes_with_no_rows(signature: Signature, tensors: Any) -> None:
    result = InputPlan(signature).prepare(tensors)
    rows = next(iter(result.values())) if isinstance(result, dict) else result
    assert len(rows) == 0


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {"ids": np.empty((3, 0), np.int64), "mask": np.empty((3, 0), np.bool_)},
            "input 'ids': shape [3, 0] holds no values; only the batch (first) dimension may be 0",
        ),
        (
            {"ids": np.empty((0, 4), np.int64), "mask": np.ones((2, 4), np.bool_)},
            "input 'ids' has no rows but input 'mask' has 2; send rows in every input or in none",
        ),
    ],
    ids=["zero-beyond-the-batch", "rows-in-one-input-only"],
)
def test_zero_sized_tensors_other_than_an_empty_batch_are_refused(
    tensors: Any, message: str
) -> None:
    with raises(message):
        InputPlan(SEQUENCES).prepare(tensors)


def test_no_rows_follows_the_spec() -> None:
    assert no_rows(TensorSpec("y", "FP32", (-1, 2))).shape == (0, 2)
    assert no_rows(TensorSpec("y", "INT64", (-1, -1, 3))).shape == (0, 0, 3)
    assert no_rows(TensorSpec("label", "BYTES", (-1,))).dtype == np.dtype(object)
    assert no_rows(TensorSpec("score", "BF16", ())).shape == (0,)
