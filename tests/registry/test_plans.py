"""An InputPlan is built once per signature and then checks any number of requests."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dockyard.errors import SignatureMismatch
from dockyard.registry.plans import InputPlan, listed
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
