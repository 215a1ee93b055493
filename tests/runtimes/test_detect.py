"""Framework detection for in-memory models and paths, and the framework-name registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from onnx import helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from dockyard.errors import InvalidInput, MissingExtra
from dockyard.runtimes import detect
from dockyard.runtimes.base import LoadOptions, import_extra
from extras import HAS_TORCH, needs_torch


def plain_function(x: object) -> object:
    return x


def _torch_module() -> object:
    """A torch module, where torch is installed."""
    if not HAS_TORCH:
        return None
    import torch

    return torch.nn.Linear(2, 1)


class Predictor:
    """A callable object that is no framework's model."""

    def __call__(self, x: object) -> object:
        return x


@pytest.mark.parametrize(
    ("model", "framework"),
    [
        (LogisticRegression(), "sklearn"),
        (make_pipeline(xgb.XGBClassifier()), "sklearn"),
        (xgb.XGBClassifier(), "xgboost"),
        (xgb.Booster(), "xgboost"),
        (lgb.LGBMRegressor(), "lightgbm"),
        (helper.make_model(helper.make_graph([], "empty", [], [])), "onnx"),
        pytest.param(_torch_module(), "torch", marks=needs_torch),
        (plain_function, "pyfunc"),
        (Predictor(), "pyfunc"),
    ],
    ids=[
        "sklearn",
        "pipeline-of-xgboost",
        "xgboost-wrapper",
        "xgboost-booster",
        "lightgbm",
        "onnx",
        "torch",
        "function",
        "callable",
    ],
)
def test_in_memory_models(model: object, framework: str) -> None:
    assert detect.detect_framework(model) == framework


@pytest.mark.parametrize(
    ("name", "framework"),
    [
        ("m.skops", "sklearn"),
        ("m.PKL", "sklearn"),
        ("m.joblib", "sklearn"),
        ("m.onnx", "onnx"),
        ("m.ubj", "xgboost"),
        ("m.json", "xgboost"),
        ("m.txt", "lightgbm"),
        ("m.pt", "torch"),
        ("m.torchscript", "torch"),
    ],
    ids=["skops", "pickle-upper", "joblib", "onnx", "ubj", "json", "txt", "pt", "torchscript"],
)
def test_paths_by_suffix(name: str, framework: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(b"")
    assert detect.detect_framework(tmp_path / name) == framework
    assert detect.detect_framework(str(tmp_path / name)) == framework


def test_folder_is_pyfunc(tmp_path: Path) -> None:
    assert detect.detect_framework(tmp_path) == "pyfunc"


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="nowhere.onnx does not exist"):
        detect.detect_framework(tmp_path / "nowhere.onnx")


def test_unknown_suffix_asks_for_framework(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"pass framework=\.\.\."):
        detect.detect_framework(tmp_path / "model.bin")


def test_unknown_object_asks_for_framework() -> None:
    with pytest.raises(InvalidInput, match=r"numpy.ndarray belongs to; pass framework=\.\.\."):
        detect.detect_framework(np.zeros(3))


@pytest.mark.parametrize("name", sorted(detect.FRAMEWORK_MODULES), ids=str)
def test_every_module_has_the_framework_surface(name: str) -> None:
    module = detect.framework_module(name)
    assert name == module.FRAMEWORK
    assert isinstance(module.EXTRA, str)
    assert isinstance(module.tabular, bool)
    assert callable(module.is_model)
    assert callable(module.save)
    assert callable(module.load)


def test_unknown_framework_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="unknown framework 'keras'; expected one of lightgbm"):
        detect.framework_module("keras")


def test_load_runtime(tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(20, 2))
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    saved = detect.framework_module("sklearn").save(model, tmp_path)

    runtime = detect.load_runtime("sklearn", saved.path, LoadOptions(format=saved.format))

    np.testing.assert_array_equal(runtime.predict(x, ["predict"])["predict"], model.predict(x))


def test_missing_extra_names_the_pip_extra() -> None:
    with pytest.raises(MissingExtra, match=r"pip install 'dockyard\[onnx\]'"):
        import_extra("dockyard_no_such_module", "onnx", "onnx")


WITHOUT_EXTRAS = """
import sys
from pathlib import Path

for name in ("torch", "xgboost", "lightgbm", "onnx", "onnxruntime"):
    sys.modules[name] = None  # what an environment without the extra looks like to import

from dockyard.errors import MissingExtra
from dockyard.runtimes import detect
from dockyard.runtimes.base import LoadOptions

for package, name in [("torch.nn.modules.module", "Module"), ("xgboost.core", "Booster")]:
    fake = type(name, (), {"__module__": package})()
    print(detect.detect_framework(fake))
try:
    detect.load_runtime("onnx", Path("model.onnx"), LoadOptions(format="onnx"))
except MissingExtra as exc:
    print(exc)
"""


def test_detection_works_without_the_extras() -> None:
    """is_model reads class names only; loading then names the extra to install."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [
        "torch",
        "xgboost",
        "onnx is not installed; install it with: pip install 'dockyard[onnx]'",
    ]
