"""The scikit-learn runtime: skops round trips, pickle refusal, and the skops type allow-list."""

from __future__ import annotations

import gc
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn import config_context
from sklearn import get_config as sklearn_config
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from crafted import datasource_skops
from dockyard.errors import InvalidInput, PredictionFailed
from dockyard.runtimes import sklearn
from dockyard.runtimes.base import LoadOptions

from .conftest import RoundTrip


class ShiftRegressor(RegressorMixin, BaseEstimator):
    """A custom estimator: its type is on no allow-list, so loading it needs the operator's word."""

    def __init__(self, shift: float = 1.0) -> None:
        self.shift = shift

    def fit(self, x: Any, y: Any) -> ShiftRegressor:
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.full(len(x), self.mean_ + self.shift)


SHIFT_REGRESSOR = f"{ShiftRegressor.__module__}.{ShiftRegressor.__qualname__}"


def logistic(x: np.ndarray, y: np.ndarray, frame: pd.DataFrame) -> tuple[Any, Any]:
    return LogisticRegression().fit(x, y), x


def column_pipeline(x: np.ndarray, y: np.ndarray, frame: pd.DataFrame) -> tuple[Any, Any]:
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["size", "weight"]),
            ("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(frame, y), frame


def hist_gradient_boosting(x: np.ndarray, y: np.ndarray, frame: pd.DataFrame) -> tuple[Any, Any]:
    return HistGradientBoostingClassifier(max_iter=5).fit(x, y), x


@pytest.mark.parametrize(
    "build",
    [logistic, column_pipeline, hist_gradient_boosting],
    ids=["logistic-regression", "pipeline-column-transformer", "hist-gradient-boosting"],
)
def test_roundtrip_predicts_like_the_original(
    build: Callable[..., tuple[Any, Any]],
    features: np.ndarray,
    labels: np.ndarray,
    frame: pd.DataFrame,
    roundtrip: RoundTrip,
) -> None:
    model, x = build(features, labels, frame)
    saved, runtime = roundtrip(sklearn, model)

    assert saved.format == "skops"
    assert saved.options["estimator"] == f"{type(model).__module__}.{type(model).__qualname__}"
    assert runtime.output_names == ("predict", "predict_proba")
    result = runtime.predict(x, ())
    np.testing.assert_array_equal(result["predict"], model.predict(x))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(x), rtol=1e-12)


def test_array_for_a_model_fitted_on_a_numeric_frame_needs_no_warning(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    frame = pd.DataFrame(features, columns=["a", "b", "c", "d"])
    model = LogisticRegression().fit(frame, labels)
    _, runtime = roundtrip(sklearn, model)

    result = runtime.predict(features, ["predict_proba"])  # filterwarnings=error would fail here

    assert list(result) == ["predict_proba"]
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(frame), rtol=1e-12)


def test_regressor_has_only_predict(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = LinearRegression().fit(features, features[:, 2])
    _, runtime = roundtrip(sklearn, model)

    assert runtime.output_names == ("predict",)
    np.testing.assert_allclose(
        runtime.predict(features, ["predict"])["predict"], model.predict(features)
    )
    with pytest.raises(InvalidInput, match="unknown output 'predict_proba'"):
        runtime.predict(features, ["predict_proba"])


def test_skops_file_is_copied(
    features: np.ndarray, labels: np.ndarray, tmp_path: Path, roundtrip: RoundTrip
) -> None:
    model = LogisticRegression().fit(features, labels)
    skops.io.dump(model, tmp_path / "mine.skops")

    saved, runtime = roundtrip(sklearn, tmp_path / "mine.skops")

    assert saved.format == "skops"
    assert saved.path.read_bytes() == (tmp_path / "mine.skops").read_bytes()
    np.testing.assert_array_equal(runtime.predict(features, ())["predict"], model.predict(features))


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"], ids=["pkl", "pickle", "joblib"])
def test_pickle_file_is_refused_without_allow_pickle(
    suffix: str, features: np.ndarray, labels: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / f"model{suffix}"
    joblib.dump(LogisticRegression().fit(features, labels), path)

    with pytest.raises(InvalidInput, match="--allow-pickle"):
        sklearn.save(path, tmp_path)


def test_pickle_loads_only_when_allowed(
    features: np.ndarray, labels: np.ndarray, tmp_path: Path
) -> None:
    model = LogisticRegression().fit(features, labels)
    joblib.dump(model, tmp_path / "model.pkl")
    (tmp_path / "saved").mkdir()

    saved = sklearn.save(tmp_path / "model.pkl", tmp_path / "saved", allow_pickle=True)

    assert saved.format == "pickle"
    with pytest.raises(InvalidInput, match="--allow-pickle"):
        sklearn.load(saved.path, LoadOptions(format="pickle"))
    runtime = sklearn.load(saved.path, LoadOptions(format="pickle", allow_pickle=True))
    np.testing.assert_array_equal(runtime.predict(features, ())["predict"], model.predict(features))


def test_type_off_the_allow_list_is_refused_then_trusted(
    features: np.ndarray, labels: np.ndarray, tmp_path: Path
) -> None:
    model = ShiftRegressor(shift=2.0).fit(features, features[:, 0])
    saved = sklearn.save(model, tmp_path)

    with pytest.raises(InvalidInput, match="--trusted-type") as refused:
        sklearn.load(saved.path, LoadOptions(format="skops"))
    assert SHIFT_REGRESSOR in str(refused.value)

    runtime = sklearn.load(
        saved.path, LoadOptions(format="skops", trusted_types=(SHIFT_REGRESSOR,))
    )
    np.testing.assert_array_equal(runtime.predict(features, ())["predict"], model.predict(features))


def test_crafted_skops_file_cannot_call_builtins(tmp_path: Path) -> None:
    """A skops file may ask to call any type it names; ``builtins.eval`` must never be approved."""
    marker = tmp_path / "ran"
    schema = json.loads(zipfile.ZipFile(io.BytesIO(skops.io.dumps({"a": 1}))).read("schema.json"))
    code = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode"}
    code |= {"content": json.dumps(f"open({str(marker)!r}, 'w')"), "is_json": True}
    schema["content"]["a"] = {
        "__class__": "eval",
        "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [code],
        },
    }
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))

    with pytest.raises(InvalidInput, match="builtins.eval"):
        sklearn.load(path, LoadOptions(format="skops"))
    assert not marker.exists()


def test_a_datasource_that_would_delete_a_folder_is_refused(tmp_path: Path) -> None:
    """``numpy.lib.npyio.DataSource`` is numpy, and its ``__del__`` deletes its folder."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    path = datasource_skops(tmp_path / "model.skops", victim)

    with pytest.raises(InvalidInput, match="numpy.lib.npyio.DataSource"):
        sklearn.load(path, LoadOptions(format="skops"))
    gc.collect()

    assert (victim / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (object(), "not a scikit-learn estimator"),
        (Path("missing.skops"), "does not exist"),
    ],
    ids=["not-an-estimator", "missing-file"],
)
def test_save_refuses(model: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=message):
        sklearn.save(model, tmp_path)


def test_save_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="model.bin"):
        sklearn.save(tmp_path / "model.bin", tmp_path)


def test_load_refuses_another_format(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="format 'onnx'"):
        sklearn.load(tmp_path / "model.onnx", LoadOptions(format="onnx"))


def test_model_failure_is_prediction_failed(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    _, runtime = roundtrip(sklearn, LogisticRegression().fit(features, labels))

    with pytest.raises(PredictionFailed, match="ValueError"):
        runtime.predict(features[:, :2], ())


def test_is_model_needs_no_import() -> None:
    assert sklearn.is_model(LogisticRegression())
    assert not sklearn.is_model(np.zeros(3))


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression(),
        LogisticRegression(max_iter=500),  # multinomial on three classes below
        HistGradientBoostingClassifier(max_iter=10),
        RandomForestClassifier(n_estimators=5, random_state=0),
        ExtraTreesClassifier(n_estimators=5, random_state=0),
        GradientBoostingClassifier(n_estimators=5),
        DecisionTreeClassifier(random_state=0),
        GaussianNB(),
        Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]),
    ],
    ids=["lr", "lr-multiclass", "hgb", "forest", "extra-trees", "gb", "tree", "nb", "pipeline"],
)
def test_both_outputs_from_one_predict_proba_match_predict(
    model: Any, features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    rng = np.random.default_rng(11)
    three = labels + (features[:, 2] > 1).astype(np.int64)
    target = three if getattr(model, "max_iter", None) == 500 else labels
    model.fit(features, target)
    rows = np.vstack([features, rng.normal(size=(200, features.shape[1]))])
    _, runtime = roundtrip(sklearn, model)
    both = runtime.predict(rows, ())
    np.testing.assert_array_equal(both["predict"], model.predict(rows))
    np.testing.assert_allclose(both["predict_proba"], model.predict_proba(rows))


def test_finite_rows_skip_the_repeat_check_and_leave_the_config_as_it_was(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = LogisticRegression().fit(features, labels)
    _, runtime = roundtrip(sklearn, model)
    for rows in (features, features.astype(np.float32), (features > 0).astype(np.int64)):
        result = runtime.predict(rows, ())
        np.testing.assert_array_equal(result["predict_proba"], model.predict_proba(rows))
        assert sklearn_config()["assume_finite"] is False
    with config_context(assume_finite=True):
        runtime.predict(features, ())
        assert sklearn_config()["assume_finite"] is True

    seen: list[bool] = []
    original = model.predict_proba

    def spy(rows: np.ndarray) -> np.ndarray:
        seen.append(sklearn_config()["assume_finite"])
        return original(rows)

    model.predict_proba = spy
    direct = sklearn.SklearnRuntime(model)
    direct.predict(features, ())
    rows = features.copy()
    rows[0, 0] = np.nan
    with pytest.raises(PredictionFailed):
        direct.predict(rows, ())
    assert seen == [True, False]  # skipped for finite rows only


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_still_meet_scikit_learns_own_check(
    bad: float, features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    _, runtime = roundtrip(sklearn, LogisticRegression().fit(features, labels))
    rows = features[:3].copy()
    rows[1, 2] = bad

    with pytest.raises(PredictionFailed, match="ValueError"):
        runtime.predict(rows, ())
    assert sklearn_config()["assume_finite"] is False


def test_a_pipeline_keeps_every_check() -> None:
    """A pipeline's steps may turn finite rows into NaN; its final step must still refuse them."""
    x = np.abs(np.random.default_rng(3).normal(size=(40, 2))) + 0.1
    model = Pipeline([("log", FunctionTransformer(np.log)), ("model", LogisticRegression())]).fit(
        x, (x[:, 0] > x[:, 1]).astype(np.int64)
    )
    runtime = sklearn.SklearnRuntime(model)

    with pytest.raises(PredictionFailed, match="ValueError"), np.errstate(invalid="ignore"):
        runtime.predict(np.array([[-1.0, 1.0]]), ())
