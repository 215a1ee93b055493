"""The ONNX runtime: a skl2onnx-converted classifier and a hand-built float tensor graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from dockyard.errors import InvalidInput
from dockyard.runtimes import onnx as onnx_runtime
from dockyard.runtimes.base import LoadOptions

from .conftest import RoundTrip

WEIGHTS = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
BIAS = np.array([0.5, -0.5], dtype=np.float32)


@pytest.fixture
def affine() -> onnx.ModelProto:
    """``y = x @ W + b`` on a float input named ``x``."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
def test_converted_classifier_predicts_like_sklearn(
    zipmap: bool, features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = LogisticRegression().fit(features, labels)
    x = features.astype(np.float32)
    converted = to_onnx(model, x[:1], options={id(model): {"zipmap": zipmap}})

    saved, runtime = roundtrip(onnx_runtime, converted)

    assert saved.format == "onnx"
    assert runtime.fork_safe  # the CPU provider only
    assert runtime.input_names == ("X",)
    label, proba = runtime.output_names
    result = runtime.predict({"X": features}, ())  # float64 in, cast to the graph's float
    np.testing.assert_array_equal(result[label], model.predict(x))
    np.testing.assert_allclose(result[proba], model.predict_proba(x), atol=1e-6)  # float32 graph


def test_tensor_graph_from_a_file(
    affine: onnx.ModelProto, features: np.ndarray, tmp_path: Path, roundtrip: RoundTrip
) -> None:
    onnx.save(affine, tmp_path / "affine.onnx")

    saved, runtime = roundtrip(onnx_runtime, tmp_path / "affine.onnx")

    assert saved.path.read_bytes() == (tmp_path / "affine.onnx").read_bytes()
    assert runtime.input_names == ("x",)
    assert runtime.output_names == ("y",)
    result = runtime.predict({"x": features}, ["y"])
    assert result["y"].dtype == np.float32
    np.testing.assert_allclose(result["y"], features.astype(np.float32) @ WEIGHTS + BIAS, rtol=1e-6)


def test_bare_array_feeds_a_single_input(
    affine: onnx.ModelProto, features: np.ndarray, roundtrip: RoundTrip
) -> None:
    _, runtime = roundtrip(onnx_runtime, affine)
    np.testing.assert_allclose(
        runtime.predict(features, ())["y"], runtime.predict({"x": features}, ())["y"]
    )


@pytest.mark.parametrize(
    ("x", "outputs", "message"),
    [
        ({}, (), "missing input 'x'"),
        ({"x": np.zeros((1, 4)), "z": np.zeros(1)}, (), "unknown input 'z'"),
        ({"x": np.array([["a", "b", "c", "d"]])}, (), "cannot be converted"),
        ({"x": np.zeros((1, 4))}, ("nope",), "unknown output 'nope'"),
    ],
    ids=["missing-input", "unknown-input", "unconvertible", "unknown-output"],
)
def test_bad_requests_are_invalid_input(
    x: dict[str, np.ndarray],
    outputs: tuple[str, ...],
    message: str,
    affine: onnx.ModelProto,
    roundtrip: RoundTrip,
) -> None:
    _, runtime = roundtrip(onnx_runtime, affine)
    with pytest.raises(InvalidInput, match=message):
        runtime.predict(x, outputs)


def test_broken_file_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(InvalidInput, match="onnx could not handle loading model.onnx"):
        onnx_runtime.load(tmp_path / "model.onnx", LoadOptions(format="onnx"))


def test_is_model(affine: onnx.ModelProto) -> None:
    assert onnx_runtime.is_model(affine)
    assert not onnx_runtime.is_model(affine.graph)
