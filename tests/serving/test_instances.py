"""The KServe V1 codec: rows and records in, named columns out; predictions back."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import orjson
import pytest

from dockyard.datatypes import numpy_dtype
from dockyard.errors import InvalidInput, SignatureMismatch
from dockyard.registry.records import Signature, TensorSpec
from dockyard.serving.instances import decode_v1, encode_v1

TABULAR = Signature(
    inputs=(
        TensorSpec("age", "INT64", (-1,)),
        TensorSpec("income", "FP64", (-1,), allow_nan=True),
        TensorSpec("city", "BYTES", (-1,), categorical=True),
    ),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
    tabular=True,
)
NUMERIC = Signature(
    inputs=(TensorSpec("a", "FP64", (-1,)), TensorSpec("b", "FP64", (-1,))),
    outputs=(TensorSpec("y", "FP64", (-1,)),),
    tabular=True,
)
IMAGE = Signature(
    inputs=(TensorSpec("pixels", "FP32", (-1, 2, 2)),),
    outputs=(TensorSpec("y", "FP32", (-1,)),),
    tabular=False,
)
TWO_TENSORS = Signature(
    inputs=(TensorSpec("ids", "INT64", (-1, 3)), TensorSpec("mask", "BOOL", (-1, 3))),
    outputs=(TensorSpec("y", "FP32", (-1,)),),
    tabular=False,
)


def test_v1_numeric_rows_become_feature_columns() -> None:
    columns = decode_v1(orjson.dumps({"instances": [[1, 2.5], [3, 4]]}), NUMERIC)
    assert list(columns) == ["a", "b"]
    np.testing.assert_array_equal(columns["a"], [1.0, 3.0])
    np.testing.assert_array_equal(columns["b"], [2.5, 4.0])


def test_v1_mixed_rows_keep_each_column_type() -> None:
    body = orjson.dumps({"inputs": [[30, 1.5, "Oslo"], [40, None, "Rome"]]})
    columns = decode_v1(body, TABULAR)
    assert columns["age"].dtype == np.int64
    assert columns["age"].tolist() == [30, 40]
    assert columns["income"].dtype == np.float64
    assert columns["income"][0] == 1.5
    assert math.isnan(columns["income"][1])
    assert columns["city"].dtype == object
    assert columns["city"].tolist() == ["Oslo", "Rome"]


def test_v1_objects_by_feature_name() -> None:
    body = orjson.dumps(
        {
            "instances": [
                {"age": 30, "income": "NaN", "city": "Oslo"},
                {"city": "Rome", "age": 2, "income": 1},
            ]
        }
    )
    columns = decode_v1(body, TABULAR)
    assert columns["age"].tolist() == [30, 2]
    assert math.isnan(columns["income"][0])
    assert columns["income"][1] == 1.0
    assert columns["city"].tolist() == ["Oslo", "Rome"]


def test_v1_tensor_rows_and_objects() -> None:
    pixels = decode_v1(orjson.dumps({"instances": [[[1, 2], [3, 4]]]}), IMAGE)
    assert pixels["pixels"].shape == (1, 2, 2)
    body = orjson.dumps({"instances": [{"ids": [1, 2, 3], "mask": [True, True, False]}] * 2})
    both = decode_v1(body, TWO_TENSORS)
    assert both["ids"].shape == (2, 3)
    assert both["mask"].dtype == np.bool_


@pytest.mark.parametrize(
    ("signature", "shapes"),
    [
        (TABULAR, {"age": (0,), "income": (0,), "city": (0,)}),
        (IMAGE, {"pixels": (0, 2, 2)}),
        (TWO_TENSORS, {"ids": (0, 3), "mask": (0, 3)}),
    ],
    ids=["tabular", "image", "two-tensors"],
)
def test_v1_no_instances_is_an_empty_batch(
    signature: Signature, shapes: dict[str, tuple[int, ...]]
) -> None:
    decoded = decode_v1(orjson.dumps({"instances": []}), signature)
    assert {name: array.shape for name, array in decoded.items()} == shapes
    assert [array.dtype for array in decoded.values()] == [
        numpy_dtype(spec.datatype) for spec in signature.inputs
    ]


@pytest.mark.parametrize(
    ("payload", "signature", "error", "message"),
    [
        ({"predict": []}, NUMERIC, InvalidInput, "request has no 'instances' list"),
        (
            {"instances": [[1, 2, 3]]},
            NUMERIC,
            InvalidInput,
            "each instance must be a row of 2 values (one per feature: a, b); got shape [1, 3]",
        ),
        (
            {"instances": [[1, 2], [3]]},
            NUMERIC,
            InvalidInput,
            "each instance must be a row of 2 values",
        ),
        ({"instances": [{"a": 1}]}, NUMERIC, SignatureMismatch, "instance 0 is missing input 'b'"),
        (
            {"instances": [{"a": 1, "b": 2, "c": 3}]},
            NUMERIC,
            SignatureMismatch,
            "instance 0 has unexpected input 'c'; this model takes: a, b",
        ),
        (
            {"instances": [{"a": 1, "b": 2}, [1, 2]]},
            NUMERIC,
            InvalidInput,
            "instance 1 is not an object like the first instance",
        ),
        (
            {"instances": [[1, 2]]},
            TWO_TENSORS,
            InvalidInput,
            "this model takes several inputs (ids, mask); send each instance as an object",
        ),
        (
            {"instances": [{"a": "x", "b": 1}]},
            NUMERIC,
            InvalidInput,
            "input 'a': declared FP64 but data is not numeric",
        ),
    ],
    ids=[
        "no-instances",
        "wrong-width",
        "ragged",
        "missing-key",
        "extra-key",
        "mixed-instances",
        "rows-for-several-tensors",
        "string-for-float",
    ],
)
def test_v1_errors(
    payload: Any, signature: Signature, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match="^" + re.escape(message)):
        decode_v1(orjson.dumps(payload), signature)


def test_encode_v1() -> None:
    single = orjson.loads(encode_v1({"y": np.array([[1.5], [np.nan]])}, "y"))
    assert single == {"predictions": [[1.5], [None]]}
    several = orjson.loads(
        encode_v1(
            {
                "label": np.array(["yes", b"no"], dtype=object),
                "proba": np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32),
                "count": np.int64(2),
            },
            "label",
        )
    )
    assert several["predictions"] == ["yes", "no"]
    assert several["outputs"]["proba"] == [
        [pytest.approx(0.1), pytest.approx(0.9)],
        [pytest.approx(0.8), pytest.approx(0.2)],
    ]
    assert several["outputs"]["count"] == 2
    assert set(several) == {"predictions", "outputs"}
