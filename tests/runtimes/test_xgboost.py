"""The XGBoost runtime: classifier, regressor and bare Booster, in memory and from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from dockyard.errors import InvalidInput
from dockyard.runtimes import xgboost as xgboost_runtime

from .conftest import RoundTrip


def test_classifier_roundtrip(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(features, labels)

    saved, runtime = roundtrip(xgboost_runtime, model)

    assert saved.format == "xgboost-ubj"
    assert saved.options == {"estimator": "XGBClassifier"}
    assert runtime.output_names == ("predict", "predict_proba")
    result = runtime.predict(features, ())
    np.testing.assert_array_equal(result["predict"], model.predict(features))
    np.testing.assert_array_equal(result["predict_proba"], model.predict_proba(features))


def test_regressor_roundtrip(features: np.ndarray, roundtrip: RoundTrip) -> None:
    model = xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(features, features[:, 1])

    saved, runtime = roundtrip(xgboost_runtime, model)

    assert saved.options == {"estimator": "XGBRegressor"}
    assert runtime.output_names == ("predict",)
    np.testing.assert_array_equal(runtime.predict(features, ())["predict"], model.predict(features))
    with pytest.raises(InvalidInput, match="unknown output 'predict_proba'"):
        runtime.predict(features, ["predict_proba"])


def test_booster_on_a_categorical_frame(
    frame: pd.DataFrame, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    table = frame.astype({"colour": "category"})
    train = xgb.DMatrix(table, label=labels, enable_categorical=True)
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic"}, train, 4)

    saved, runtime = roundtrip(xgboost_runtime, booster)

    assert saved.options == {"estimator": "Booster"}
    expected = booster.predict(xgb.DMatrix(table, enable_categorical=True))
    np.testing.assert_array_equal(runtime.predict(table, ())["predict"], expected)


@pytest.mark.parametrize("suffix", [".json", ".ubj"], ids=["json", "ubj"])
def test_model_file_reloads_as_its_wrapper(
    suffix: str, features: np.ndarray, labels: np.ndarray, tmp_path: Path, roundtrip: RoundTrip
) -> None:
    model = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(features, labels)
    model.save_model(tmp_path / f"model{suffix}")

    saved, runtime = roundtrip(xgboost_runtime, tmp_path / f"model{suffix}")

    assert saved.path.suffix == ".ubj"
    assert saved.options == {"estimator": "XGBClassifier"}
    result = runtime.predict(features, ["predict_proba"])
    np.testing.assert_array_equal(result["predict_proba"], model.predict_proba(features))


def test_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not an XGBoost model"):
        xgboost_runtime.save(object(), tmp_path)


def test_is_model() -> None:
    assert xgboost_runtime.is_model(xgb.XGBRegressor())
    assert xgboost_runtime.is_model(xgb.Booster())
    assert not xgboost_runtime.is_model(xgb.DMatrix(np.zeros((2, 2))))
