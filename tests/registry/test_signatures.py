"""Signature inference, user-written signatures, and the validation every request passes through."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dockyard.errors import InvalidInput, SignatureMismatch
from dockyard.registry.records import Signature, TensorSpec
from dockyard.registry.signatures import (
    infer_signature,
    parse_signature,
    prepare_input,
    reference_input,
)

LABELS = {"label": np.array([0, 1, 0])}


def tabular(*specs: TensorSpec) -> Signature:
    return Signature(inputs=specs, outputs=(TensorSpec("label", "INT64", (-1,)),), tabular=True)


def tensors(*specs: TensorSpec) -> Signature:
    return Signature(inputs=specs, outputs=(TensorSpec("y", "FP32", (-1,)),), tabular=False)


def feature(name: str, datatype: str = "FP64", **flags: bool) -> TensorSpec:
    return TensorSpec(name, datatype, (-1,), **flags)


NUMERIC = tabular(feature("a"), feature("b"), feature("c"))
MIXED = tabular(feature("age", "INT64"), feature("income", allow_nan=True), feature("flag", "BOOL"))
WITH_TEXT = tabular(feature("age", "INT64"), feature("city", "BYTES", categorical=True))
IMAGE = tensors(TensorSpec("pixels", "FP32", (-1, 3, 2, 2)))


def raises(error: type[Exception], message: str) -> Any:
    return pytest.raises(error, match="^" + re.escape(message))


def test_infer_from_2d_array_names_columns_and_flags_nan() -> None:
    reference = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    signature = infer_signature(reference, LABELS, tabular=True)
    assert signature.tabular
    assert signature.inputs == (feature("x0"), feature("x1", allow_nan=True))
    assert signature.outputs == (TensorSpec("label", "INT64", (-1,)),)
    named = infer_signature(reference, LABELS, tabular=True, feature_names=["height", "weight"])
    assert [spec.name for spec in named.inputs] == ["height", "weight"]


def test_infer_from_dataframe_with_a_string_column() -> None:
    frame = pd.DataFrame(
        {
            "age": np.array([30, 40, 50], dtype=np.int64),
            "income": [1.5, np.nan, 2.0],
            "score": np.array([1, 2, 3], dtype=np.float32),
            "member": [True, False, True],
            "city": ["Oslo", "Rome", None],
            "tier": pd.Categorical(["a", "b", "a"]),
            "visits": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    signature = infer_signature(frame, {"label": np.array(["x", "y", "x"])}, tabular=True)
    assert signature.inputs == (
        feature("age", "INT64"),
        feature("income", allow_nan=True),
        feature("score", "FP32"),
        feature("member", "BOOL"),
        feature("city", "BYTES", categorical=True, allow_nan=True),
        feature("tier", "BYTES", categorical=True),
        feature("visits", "FP64", allow_nan=True),
    )
    rows = reference_input(signature, frame)
    assert isinstance(rows, pd.DataFrame)
    assert rows["visits"].dtype == np.float64
    assert signature.outputs == (TensorSpec("label", "BYTES", (-1,)),)


def test_infer_tensor_signature_from_an_array_and_a_dict() -> None:
    pixels = np.zeros((4, 3, 2, 2), dtype=np.float32)
    outputs = {"logits": np.zeros((4, 10), dtype=np.float32)}
    signature = infer_signature(pixels, outputs, tabular=False, input_names=["pixels"])
    assert signature.inputs == (TensorSpec("pixels", "FP32", (-1, 3, 2, 2)),)
    assert signature.outputs == (TensorSpec("logits", "FP32", (-1, 10)),)
    assert infer_signature(pixels, {}, tabular=False).inputs[0].name == "input-0"

    pair = {"ids": np.array([[1, 2], [3, 4]]), "weights": np.array([[0.5, np.inf], [1, 2]])}
    signature = infer_signature(pair, {}, tabular=False, input_names=["weights", "ids"])
    assert signature.inputs == (
        TensorSpec("weights", "FP64", (-1, 2), allow_nan=True),
        TensorSpec("ids", "INT64", (-1, 2)),
    )


@pytest.mark.parametrize(
    ("reference", "kwargs", "message"),
    [
        (np.array([1.0, 2.0]), {"tabular": True}, "tabular reference data must be 2-D"),
        (np.empty((0, 3)), {"tabular": True}, "reference data is empty"),
        (
            np.ones((2, 3)),
            {"tabular": True, "feature_names": ["a", "b"]},
            "feature_names has 2 names but the reference data has 3 columns",
        ),
        (
            np.ones((2, 2)),
            {"tabular": True, "feature_names": ["a", "a"]},
            "duplicate feature name 'a'",
        ),
        (np.empty((0, 3)), {"tabular": False}, "reference input 'input-0' is empty"),
        ({}, {"tabular": False}, "reference data is empty"),
        (
            np.ones((2, 3)),
            {"tabular": False, "input_names": ["a", "b"]},
            "input_names has 2 names but the reference data is a single array",
        ),
        (
            {"a": np.ones((2, 1))},
            {"tabular": False, "input_names": ["b"]},
            "input_names (b) do not match the reference data's keys (a)",
        ),
    ],
    ids=[
        "tabular-1d",
        "tabular-empty",
        "feature-names-count",
        "feature-names-duplicate",
        "tensor-empty",
        "dict-empty",
        "input-names-count",
        "input-names-keys",
    ],
)
def test_infer_errors(reference: Any, kwargs: dict[str, Any], message: str) -> None:
    with raises(InvalidInput, message):
        infer_signature(reference, {}, **kwargs)


def test_parse_signature_round_trips_to_dict() -> None:
    for signature in (MIXED, WITH_TEXT, IMAGE):
        assert parse_signature(signature.to_dict()) == signature
    minimal = parse_signature({"inputs": [{"name": "a", "datatype": "FP32"}], "tabular": True})
    assert minimal == Signature((feature("a", "FP32"),), (), tabular=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"outputs": []}, "signature 'inputs' must be a list"),
        ({"inputs": []}, "signature has no inputs"),
        ({"inputs": [], "model": 1}, "signature has unknown key 'model'"),
        ({"inputs": [{"name": "x", "datatype": "FP32"}], "tabular": "yes"},
         "signature 'tabular' must be true or false"),
        ({"inputs": [{"name": "x", "datatype": "FP128", "shape": [-1]}]},
         "signature input 'x': unknown datatype 'FP128'; expected one of BOOL"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2.5]}]},
         "signature input 'x': shape must be a list of integers (-1 for any size)"),
        ({"inputs": [{"name": "x", "datatype": "FP32"}]},
         "signature input 'x': shape must be a list of integers"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]},
         "signature input 'x': shape must be a list of integers"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}] * 2},
         "duplicate signature input name 'x'"),
        ({"inputs": [{"datatype": "FP32", "shape": [-1]}]}, "signature input #0 has no 'name'"),
        ({"inputs": ["x"]}, "signature input #0 must be an object"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "dtype": "f4"}]},
         "signature input 'x': unknown key 'dtype'; expected: name, datatype, shape"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "allow_nan": "no"}]},
         "signature input 'x': 'allow_nan' must be true or false"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3]}], "tabular": True},
         "signature input 'x': a tabular feature has shape [-1], got [3]"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}], "outputs": [{}]},
         "signature output #0 has no 'name'"),
    ],
    ids=[
        "no-inputs", "empty-inputs", "unknown-key", "tabular-not-bool", "unknown-datatype",
        "float-dim", "missing-shape", "dim-below-minus-one", "duplicate", "no-name", "not-object",
        "unknown-spec-key", "flag-not-bool", "tabular-shape", "output-no-name",
    ],
)  # fmt: skip
def test_parse_signature_errors(data: dict[str, Any], message: str) -> None:
    with raises(InvalidInput, message):
        parse_signature(data)


def test_single_matrix_in_the_right_dtype_is_not_copied() -> None:
    block = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert prepare_input(NUMERIC, {"input-0": block}) is block


def test_single_matrix_is_cast_to_the_signature_dtype() -> None:
    block = np.arange(6, dtype=np.int32).reshape(2, 3)
    result = prepare_input(NUMERIC, {"anything": block})
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, block)


def test_matrix_with_mixed_feature_types_checks_each_column() -> None:
    block = np.array([[30.0, np.nan, 1.0], [41.0, 2.5, 0.0]])
    result = prepare_input(MIXED, {"x": block})
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    with raises(SignatureMismatch, "input 'age': expected INT64, got FP64 with non-integer values"):
        prepare_input(MIXED, {"x": np.array([[30.5, 1.0, 1.0]])})
    with raises(SignatureMismatch, "input 'flag': expected BOOL, got FP64 with values other than"):
        prepare_input(MIXED, {"x": np.array([[30.0, 1.0, 2.0]])})


def test_one_tensor_per_feature_is_stacked() -> None:
    result = prepare_input(
        MIXED,
        {
            "flag": np.array([True, False]),
            "age": np.array([[30], [40]], dtype=np.int32),
            "income": np.array([1.5, np.nan], dtype=np.float32),
        },
    )
    assert isinstance(result, np.ndarray)
    assert result.shape == (2, 3)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [[30, 1.5, 1], [40, np.nan, 0]])


def test_one_tensor_per_feature_builds_a_dataframe_for_text() -> None:
    result = prepare_input(
        WITH_TEXT,
        {
            "age": np.array([30.0, 40.0]),
            "city": np.array([b"Oslo", "Z\u00fcrich"], dtype=object),
        },
    )
    assert isinstance(result, pd.DataFrame)
    assert list(result.columns) == ["age", "city"]
    assert result["age"].dtype == np.int64
    assert result["city"].tolist() == ["Oslo", "Z\u00fcrich"]


@pytest.mark.parametrize(
    ("signature", "inputs", "message"),
    [
        (NUMERIC, {"a": np.ones(2), "b": np.ones(2)}, "missing input 'c'"),
        (NUMERIC, {"a": np.ones(2)}, "missing inputs 'b', 'c'"),
        (
            NUMERIC,
            {"a": np.ones(2), "b": np.ones(2), "c": np.ones(2), "foo": np.ones(2)},
            "unexpected input 'foo'; this model takes: a, b, c",
        ),
        (
            tabular(*(feature(f"f{i}") for i in range(25))),
            {"f0": np.ones(2), "foo": np.ones(2)},
            "unexpected input 'foo'; this model takes: f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, "
            "… (15 more)",
        ),
        (
            NUMERIC,
            {"input-0": np.ones((2, 4))},
            "input 'input-0': expected one [N, 3] tensor or one tensor per feature (a, b, c); "
            "got shape [2, 4]",
        ),
        (
            WITH_TEXT,
            {"input-0": np.ones((2, 2))},
            "input 'input-0': features city are strings, so send one tensor per feature",
        ),
        (
            NUMERIC,
            {"x": np.array([["1", "2", "3"]])},
            "input 'x': expected FP64, got BYTES",
        ),
        (
            NUMERIC,
            {"x": np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0]])},
            "input 'x' contains NaN or infinity in feature 'b', which this model's signature "
            "forbids (row 1)",
        ),
        (
            NUMERIC,
            {"a": np.ones(2), "b": np.ones(3), "c": np.ones(2)},
            "input 'b' has 3 rows but input 'a' has 2",
        ),
        (
            NUMERIC,
            {"a": np.ones(2), "b": np.ones((2, 2)), "c": np.ones(2)},
            "input 'b': expected shape [-1] or [-1, 1], got [2, 2]",
        ),
        (
            WITH_TEXT,
            {"age": np.array(["30"], dtype=object), "city": np.array(["Oslo"], dtype=object)},
            "input 'age': expected INT64, got BYTES",
        ),
        (
            WITH_TEXT,
            {"age": np.array([30]), "city": np.array([7])},
            "input 'city': expected BYTES, got INT64",
        ),
        (
            WITH_TEXT,
            {"age": np.array([30, 40]), "city": np.array(["Oslo", 7], dtype=object)},
            "input 'city': expected strings (BYTES), got int (row 1)",
        ),
        (
            WITH_TEXT,
            {"age": np.array([30, 40]), "city": np.array(["Oslo", None], dtype=object)},
            "input 'city' has a missing value, which this model's signature forbids (row 1)",
        ),
        (
            WITH_TEXT,
            {"age": np.array([30]), "city": np.array([b"\xff"], dtype=object)},
            "input 'city': row 0 is not valid UTF-8 text",
        ),
        (
            WITH_TEXT,
            {"age": np.array([1.0, 2.5]), "city": np.array(["a", "b"])},
            "input 'age': expected INT64, got FP64 with non-integer values (row 1)",
        ),
        (
            WITH_TEXT,
            {"age": np.array([1.0, np.inf]), "city": np.array(["a", "b"])},
            "input 'age': expected INT64, got FP64 with non-integer values (row 1)",
        ),
        (
            MIXED,
            {"age": np.array([1]), "income": np.array([1.0]), "flag": np.array([3])},
            "input 'flag': expected BOOL, got INT64 with values other than 0 and 1 (row 0)",
        ),
        (
            tabular(feature("a"), feature("b")),
            {"a": np.array([1.0, 2.0, np.inf, 4.0]), "b": np.ones(4)},
            "input 'a' contains NaN or infinity, which this model's signature forbids (row 2)",
        ),
    ],
    ids=[
        "missing-one",
        "missing-several",
        "extra",
        "extra-truncated-list",
        "matrix-wrong-width",
        "matrix-with-text-features",
        "matrix-of-strings",
        "matrix-nan",
        "row-count-mismatch",
        "feature-not-a-column",
        "bytes-for-int",
        "int-for-bytes",
        "non-string-in-bytes",
        "missing-text",
        "invalid-utf8",
        "fraction-for-int",
        "infinity-for-int",
        "not-0-1-for-bool",
        "column-nan",
    ],
)
def test_tabular_mismatches_name_the_input(
    signature: Signature, inputs: dict[str, np.ndarray], message: str
) -> None:
    with raises(SignatureMismatch, message):
        prepare_input(signature, inputs)


def test_allow_nan_columns_pass_nan() -> None:
    signature = tabular(feature("a", allow_nan=True), feature("b"))
    result = prepare_input(signature, {"x": np.array([[np.nan, 1.0]])})
    assert isinstance(result, np.ndarray)
    with raises(SignatureMismatch, "input 'x' contains NaN or infinity in feature 'b'"):
        prepare_input(signature, {"x": np.array([[np.nan, np.nan]])})


def test_tensor_inputs_in_the_right_dtype_are_not_copied() -> None:
    pixels = np.zeros((2, 3, 2, 2), dtype=np.float32)
    result = prepare_input(IMAGE, {"pixels": pixels})
    assert isinstance(result, dict)
    assert result["pixels"] is pixels


def test_tensor_inputs_are_cast_and_returned_in_signature_order() -> None:
    signature = tensors(
        TensorSpec("ids", "INT32", (-1, 2)), TensorSpec("weights", "FP32", (-1, -1))
    )
    result = prepare_input(
        signature,
        {"weights": np.ones((1, 5), dtype=np.float64), "ids": np.array([[1.0, 2.0]])},
    )
    assert isinstance(result, dict)
    assert list(result) == ["ids", "weights"]
    assert result["ids"].dtype == np.int32
    assert result["weights"].dtype == np.float32


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing input 'pixels'"),
        (
            {"pixels": np.zeros((1, 3, 2, 2)), "mask": np.zeros(1)},
            "unexpected input 'mask'; this model takes: pixels",
        ),
        (
            {"pixels": np.zeros((1, 3, 2, 1), dtype=np.float32)},
            "input 'pixels': expected shape [-1, 3, 2, 2], got [1, 3, 2, 1]",
        ),
        (
            {"pixels": np.zeros((3, 2, 2), dtype=np.float32)},
            "input 'pixels': expected shape [-1, 3, 2, 2], got [3, 2, 2]",
        ),
        (
            {"pixels": np.full((2, 3, 2, 2), np.nan, dtype=np.float32)},
            "input 'pixels' contains NaN or infinity, which this model's signature forbids (row 0)",
        ),
        (
            {"pixels": np.full((1, 3, 2, 2), 1e300)},
            "input 'pixels': a value is out of range for FP32 (row 0)",
        ),
        (
            {"pixels": np.full((1, 3, 2, 2), "a", dtype=object)},
            "input 'pixels': expected FP32, got BYTES",
        ),
    ],
    ids=[
        "missing",
        "extra",
        "wrong-dim",
        "wrong-rank",
        "nan",
        "fp32-overflow",
        "bytes-for-float",
    ],
)
def test_tensor_mismatches_name_the_input(inputs: dict[str, np.ndarray], message: str) -> None:
    with raises(SignatureMismatch, message):
        prepare_input(IMAGE, inputs)


def test_integer_range_is_checked_when_narrowing() -> None:
    signature = tensors(TensorSpec("ids", "UINT8", (-1,)))
    result = prepare_input(signature, {"ids": np.array([0, 255])})
    assert isinstance(result, dict)
    assert result["ids"].dtype == np.uint8
    with raises(
        SignatureMismatch, "input 'ids': a value is out of range for UINT8 (0..255; row 1)"
    ):
        prepare_input(signature, {"ids": np.array([1, 256])})


def test_reference_input_from_an_array() -> None:
    reference = np.arange(30, dtype=np.float64).reshape(10, 3)
    signature = infer_signature(reference, {}, tabular=True)
    rows = reference_input(signature, reference, rows=4)
    assert isinstance(rows, np.ndarray)
    np.testing.assert_array_equal(rows, reference[:4])


def test_reference_input_from_a_dataframe_with_text() -> None:
    frame = pd.DataFrame({"age": [30, 40, 50], "city": ["Oslo", None, "Rome"]})
    signature = infer_signature(frame, {}, tabular=True)
    rows = reference_input(signature, frame, rows=2)
    assert isinstance(rows, pd.DataFrame)
    assert rows["age"].tolist() == [30, 40]
    assert rows["city"].tolist()[0] == "Oslo"
    assert pd.isna(rows["city"].tolist()[1])


def test_reference_input_for_tensors() -> None:
    reference = {"ids": np.arange(20).reshape(10, 2), "w": np.ones((10, 1), dtype=np.float32)}
    signature = infer_signature(reference, {}, tabular=False)
    rows = reference_input(signature, reference, rows=3)
    assert isinstance(rows, dict)
    assert rows["ids"].shape == (3, 2)
    assert rows["w"].shape == (3, 1)
    single = infer_signature(np.ones((8, 4)), {}, tabular=False, input_names=["x"])
    rows = reference_input(single, np.ones((8, 4)))
    assert isinstance(rows, dict)
    assert rows["x"].shape == (5, 4)
