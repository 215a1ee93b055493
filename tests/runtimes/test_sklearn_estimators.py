"""Every scikit-learn estimator, fitted for real and saved with skops, loads with no trusted types.

The README promises "any estimator / pipeline": the allow-list must hold each of them, with the
internal classes they keep once fitted, without the operator naming a single type.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.special
import skops.io
from sklearn.base import is_regressor
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor, make_column_selector
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import DotProduct, Matern, WhiteKernel
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import all_estimators

from dockyard.errors import InvalidInput
from dockyard.runtimes import sklearn
from dockyard.runtimes.base import LoadOptions

RNG = np.random.default_rng(0)
X = np.abs(RNG.normal(size=(60, 4))) + 0.1
"""Positive, so estimators that take counts or frequencies (chi2, NMF, MultinomialNB) fit too."""
Y = (X[:, 0] > X[:, 1]).astype(np.int64)
Y_REAL = X[:, 0] * 2 + X[:, 1]
Y_TWO = np.column_stack([Y, (X[:, 2] > X[:, 3]).astype(np.int64)])
Y_REAL_TWO = np.column_stack([Y_REAL, X[:, 2]])
TEXT = ["red apple", "green pear", "blue sky", "red sky"] * 15
RECORDS = [{"size": float(v), "kind": "big" if v > 1 else "small"} for v in X[:, 0]]
SAMPLES_ONLY = "samples only"
"""Marks a builder's target: ``fit(x)`` alone (a transformer of rows, a label encoder)."""

Built = tuple[Any, Any, Any]


def classifier() -> LogisticRegression:
    return LogisticRegression()


def regressor() -> LinearRegression:
    return LinearRegression()


def voters(tree: type) -> list[tuple[str, Any]]:
    return [
        ("linear", classifier() if tree is DecisionTreeClassifier else regressor()),
        ("tree", tree()),
    ]


BUILDERS: dict[str, Callable[[type], Built]] = {
    # Meta-estimators, around a small real estimator.
    "ClassifierChain": lambda cls: (cls(classifier()), X, Y_TWO),
    "MultiOutputClassifier": lambda cls: (cls(classifier()), X, Y_TWO),
    "MultiOutputRegressor": lambda cls: (cls(regressor()), X, Y_REAL_TWO),
    "RegressorChain": lambda cls: (cls(regressor()), X, Y_REAL_TWO),
    "FixedThresholdClassifier": lambda cls: (cls(classifier()), X, Y),
    "TunedThresholdClassifierCV": lambda cls: (cls(classifier(), cv=2), X, Y),
    "FrozenEstimator": lambda cls: (cls(classifier().fit(X, Y)), X, Y),
    "GridSearchCV": lambda cls: (cls(classifier(), {"C": [0.5, 1.0]}, cv=2), X, Y),
    "RandomizedSearchCV": lambda cls: (cls(classifier(), {"C": [0.5, 1.0]}, n_iter=2, cv=2), X, Y),
    "OneVsOneClassifier": lambda cls: (cls(classifier()), X, Y),
    "OneVsRestClassifier": lambda cls: (cls(classifier()), X, Y),
    "OutputCodeClassifier": lambda cls: (cls(classifier()), X, Y),
    "RFE": lambda cls: (cls(classifier()), X, Y),
    "RFECV": lambda cls: (cls(classifier(), cv=2), X, Y),
    "SelectFromModel": lambda cls: (cls(classifier()), X, Y),
    "SequentialFeatureSelector": lambda cls: (
        cls(classifier(), n_features_to_select=2, cv=2),
        X,
        Y,
    ),
    "SelfTrainingClassifier": lambda cls: (
        cls(classifier()),
        X,
        np.where(np.arange(60) % 3, Y, -1),
    ),
    "StackingClassifier": lambda cls: (cls(voters(DecisionTreeClassifier), cv=2), X, Y),
    "StackingRegressor": lambda cls: (cls(voters(DecisionTreeRegressor), cv=2), X, Y_REAL),
    "VotingClassifier": lambda cls: (cls(voters(DecisionTreeClassifier)), X, Y),
    "VotingRegressor": lambda cls: (cls(voters(DecisionTreeRegressor)), X, Y_REAL),
    # Composites.
    "Pipeline": lambda cls: (cls([("scale", StandardScaler()), ("model", classifier())]), X, Y),
    "FeatureUnion": lambda cls: (cls([("scale", StandardScaler()), ("pca", PCA(2))]), X, Y),
    "ColumnTransformer": lambda cls: (
        cls([("scale", StandardScaler(), [0, 1]), ("onehot", OneHotEncoder(), [2])]),
        X.round(),
        Y,
    ),
    # Estimators whose defaults do not fit 60 rows of 4 features, or that take other input.
    "CCA": lambda cls: (cls(n_components=1), X, Y_REAL),
    "PLSCanonical": lambda cls: (cls(n_components=1), X, Y_REAL),
    "PLSSVD": lambda cls: (cls(n_components=1), X, Y_REAL),
    "MultiTaskElasticNet": lambda cls: (cls(), X, Y_REAL_TWO),
    "MultiTaskElasticNetCV": lambda cls: (cls(), X, Y_REAL_TWO),
    "MultiTaskLasso": lambda cls: (cls(), X, Y_REAL_TWO),
    "MultiTaskLassoCV": lambda cls: (cls(), X, Y_REAL_TWO),
    "IsotonicRegression": lambda cls: (cls(), X[:, 0], Y_REAL),
    "GaussianRandomProjection": lambda cls: (cls(n_components=2), X, SAMPLES_ONLY),
    "SparseRandomProjection": lambda cls: (cls(n_components=2), X, SAMPLES_ONLY),
    "KernelCenterer": lambda cls: (cls(), X @ X.T, SAMPLES_ONLY),
    "SparseCoder": lambda cls: (
        cls(dictionary=X[:3] / np.linalg.norm(X[:3], axis=1, keepdims=True)),
        X,
        SAMPLES_ONLY,
    ),
    "LabelEncoder": lambda cls: (cls(), Y, SAMPLES_ONLY),
    "LabelBinarizer": lambda cls: (cls(), Y, SAMPLES_ONLY),
    "MultiLabelBinarizer": lambda cls: (cls(), [(1, 2), (3,)], SAMPLES_ONLY),
    "DictVectorizer": lambda cls: (cls(), RECORDS, SAMPLES_ONLY),
    "FeatureHasher": lambda cls: (cls(n_features=8), RECORDS, SAMPLES_ONLY),
    "CountVectorizer": lambda cls: (cls(), TEXT, SAMPLES_ONLY),
    "TfidfVectorizer": lambda cls: (cls(), TEXT, SAMPLES_ONLY),
    "HashingVectorizer": lambda cls: (cls(n_features=16), TEXT, SAMPLES_ONLY),
    "PatchExtractor": lambda cls: (cls(patch_size=(2, 2)), X.reshape(5, 12, 4), SAMPLES_ONLY),
    # Defaults that take seconds here; fewer iterations keep the same fitted structure.
    "HistGradientBoostingClassifier": lambda cls: (cls(max_iter=10), X, Y),
    "HistGradientBoostingRegressor": lambda cls: (cls(max_iter=10), X, Y_REAL),
    "LogisticRegressionCV": lambda cls: (cls(cv=2, Cs=2), X, Y),
    "TSNE": lambda cls: (cls(perplexity=5, max_iter=250), X, SAMPLES_ONLY),
}
"""How to build and fit the estimators that need more than ``cls().fit(X, y)``."""

NOT_SAVED = {
    "Birch": "skops cannot save a Birch model: it holds _CFNode objects skops does not support",
}
ESTIMATORS = all_estimators()


def fitted(name: str, cls: type) -> tuple[Any, Any]:
    """The estimator ``name`` fitted on small real data, and the rows it was fitted on."""
    with warnings.catch_warnings():
        # deprecated classes, convergence and small-data warnings: of the fit, not of loading
        warnings.simplefilter("ignore")
        estimator, x, y = (
            BUILDERS[name](cls)
            if name in BUILDERS
            else (cls(), X, Y_REAL if is_regressor(cls()) else Y)
        )
        if isinstance(y, str):
            estimator.fit(x)
        else:
            estimator.fit(x, y)
    return estimator, x


def assert_loads_with_no_trusted_types(estimator: Any, x: Any, path: Path) -> None:
    """Load through Dockyard's runtime; predict like the original, or be refused only for
    having no ``predict`` (which Dockyard checks after every type was approved and loaded)."""
    skops.io.dump(estimator, path)
    with warnings.catch_warnings():
        # creating a deprecated estimator warns, loading it too (PassiveAggressiveClassifier)
        warnings.filterwarnings("ignore", "Class .* is deprecated", FutureWarning)
        if not callable(getattr(estimator, "predict", None)):
            with pytest.raises(InvalidInput, match="which has no predict"):
                sklearn.load(path, LoadOptions(format="skops"))
            return
        runtime = sklearn.load(path, LoadOptions(format="skops"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. feature names: the same for both models
        expected = estimator.predict(x)
        got = runtime.predict(x, ["predict"])["predict"]
    if np.asarray(expected).dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("name", "cls"), ESTIMATORS, ids=[name for name, _ in ESTIMATORS])
def test_every_estimator_loads_with_no_trusted_types(name: str, cls: type, tmp_path: Path) -> None:
    if name in NOT_SAVED:
        pytest.skip(NOT_SAVED[name])
    estimator, x = fitted(name, cls)
    assert_loads_with_no_trusted_types(estimator, x, tmp_path / "model.skops")


def variants() -> dict[str, tuple[Any, Any, Any]]:
    """Fitted states beyond the defaults: losses, trees, kernels and functions models keep."""
    frame = pd.DataFrame(
        {
            "size": X[:, 0],
            "weight": X[:, 1],
            "colour": pd.Categorical(np.array(["red", "green", "blue"])[np.arange(60) % 3]),
        }
    )
    classes = Y + (X[:, 2] > 1).astype(np.int64)
    return {
        "hist-gradient-boosting-categorical": (
            HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype"),
            frame,
            Y,
        ),
        "column-selector-pipeline": (
            make_pipeline(
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), make_column_selector(dtype_include="number")),
                        ("colour", OneHotEncoder(), ["colour"]),
                    ]
                ),
                classifier(),
            ),
            frame.assign(colour=frame["colour"].astype(str)),
            classes,
        ),
        "function-transformers": (
            make_pipeline(
                FunctionTransformer(np.log1p),
                FunctionTransformer(scipy.special.expit),
                SelectKBest(chi2, k=2),
                classifier(),
            ),
            X,
            Y,
        ),
        "target-transform": (
            TransformedTargetRegressor(regressor(), func=np.log, inverse_func=np.exp),
            X,
            Y_REAL,
        ),
        "ball-tree-manhattan": (
            KNeighborsClassifier(algorithm="ball_tree", metric="manhattan"),
            X,
            Y,
        ),
        "sgd-modified-huber": (SGDClassifier(loss="modified_huber", max_iter=5), X, Y),
        "gaussian-process-kernels": (
            GaussianProcessRegressor(kernel=Matern() + WhiteKernel() + DotProduct()),
            X,
            Y_REAL,
        ),
    }


VARIANTS = variants()


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_fitted_variants_load_with_no_trusted_types(variant: str, tmp_path: Path) -> None:
    estimator, x, y = VARIANTS[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(x, y)
    assert_loads_with_no_trusted_types(estimator, x, tmp_path / "model.skops")
