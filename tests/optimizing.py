"""Small real models for the tests of ``dockyard optimize``: trained in a second or less, with
missing values in their data where the model takes them."""

from __future__ import annotations

from typing import Any

import numpy as np

FEATURES = 8
ROWS = 600


def table(seed: int = 0, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, binary labels, three-class labels); a share ``missing`` of values is NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)
    y3 = np.digitize(x[:, 0] - x[:, 3], [-0.5, 0.5]).astype(np.int64)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x, y, y3


def trained(kind: str) -> tuple[Any, np.ndarray]:
    """A fitted model of ``kind`` and its reference data."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, y3 = table()
    gaps, gap_y, gap_y3 = table(missing=0.05)
    if kind == "logistic":
        return LogisticRegression(max_iter=500).fit(x, y), x
    if kind == "pipeline":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y3), x
    if kind == "hist-classifier":
        return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(gaps, gap_y), gaps
    if kind == "hist-regressor":
        model = HistGradientBoostingRegressor(max_iter=20, random_state=0)
        return model.fit(gaps, x[:, 4] * 3 + gap_y), gaps
    if kind == "forest":
        return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(x, y3), x
    if kind == "xgboost-classifier":
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)
        return model.fit(gaps, gap_y3), gaps
    if kind == "xgboost-regressor":
        import xgboost

        model = xgboost.XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1)
        return model.fit(gaps, x[:, 4] * 3 + gap_y), gaps
    if kind == "lightgbm-classifier":
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, n_jobs=1)
        return model.fit(gaps, gap_y3), gaps
    if kind == "lightgbm-regressor":
        import lightgbm

        model = lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1, n_jobs=1)
        return model.fit(gaps, x[:, 4] * 3 + gap_y), gaps
    raise ValueError(kind)
