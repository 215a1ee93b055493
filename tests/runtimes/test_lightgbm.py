"""The LightGBM runtime: binary and multiclass classifiers, a regressor, and a text model file."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from dockyard.errors import InvalidInput
from dockyard.runtimes import lightgbm as lightgbm_runtime

from .conftest import RoundTrip

TINY = {"n_estimators": 5, "min_child_samples": 5, "verbose": -1}


def test_binary_classifier_roundtrip(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = lgb.LGBMClassifier(**TINY).fit(features, labels)

    saved, runtime = roundtrip(lightgbm_runtime, model)

    assert saved.format == "lightgbm-txt"
    assert saved.options == {"objective": "binary", "classes": [0, 1]}
    assert runtime.output_names == ("predict", "predict_proba")
    result = runtime.predict(features, ())
    np.testing.assert_array_equal(result["predict"], model.predict(features))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(features), rtol=1e-12)


def test_multiclass_classifier_with_string_labels_on_a_frame(
    frame: pd.DataFrame, roundtrip: RoundTrip
) -> None:
    table = frame.astype({"colour": "category"})
    kind = (frame["size"] > 0).to_numpy(int) + (frame["weight"] > 0.5).to_numpy(int)
    species = np.array(["ant", "bee", "cat"])[kind]
    model = lgb.LGBMClassifier(**TINY).fit(table, species)

    saved, runtime = roundtrip(lightgbm_runtime, model)

    assert saved.options["classes"] == ["ant", "bee", "cat"]
    result = runtime.predict(table, ())
    np.testing.assert_array_equal(result["predict"], model.predict(table))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(table), rtol=1e-12)


def test_regressor_roundtrip(features: np.ndarray, roundtrip: RoundTrip) -> None:
    model = lgb.LGBMRegressor(**TINY).fit(features, features[:, 3])

    saved, runtime = roundtrip(lightgbm_runtime, model)

    assert saved.options == {"objective": "regression", "classes": None}
    assert runtime.output_names == ("predict",)
    np.testing.assert_allclose(runtime.predict(features, ())["predict"], model.predict(features))
    with pytest.raises(InvalidInput, match="unknown output"):
        runtime.predict(features, ["predict_proba"])


def test_text_file_of_a_binary_booster(
    features: np.ndarray, labels: np.ndarray, tmp_path: Path, roundtrip: RoundTrip
) -> None:
    model = lgb.LGBMClassifier(**TINY).fit(features, labels)
    model.booster_.save_model(tmp_path / "model.txt")

    saved, runtime = roundtrip(lightgbm_runtime, tmp_path / "model.txt")

    assert saved.options == {"objective": "binary", "classes": [0, 1]}
    result = runtime.predict(features, ["predict"])
    assert list(result) == ["predict"]
    np.testing.assert_array_equal(result["predict"], model.predict(features))


def test_is_model() -> None:
    assert lightgbm_runtime.is_model(lgb.LGBMRegressor())
    assert not lightgbm_runtime.is_model(lgb.Dataset(np.zeros((2, 2))))
