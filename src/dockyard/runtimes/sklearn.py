"""scikit-learn estimators and pipelines, stored with skops (pickle only if the operator allows).

Loading a skops file checks its sizes before inflating anything (``skops_files.py``) and approves
every type it names against Dockyard's allow-list (``trust.py``) plus the types the operator trusted
at registration, never against a list read from the file itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput
from dockyard.runtimes.base import (
    LoadOptions,
    SavedModel,
    import_extra,
    prediction_errors,
    select_outputs,
)
from dockyard.runtimes.classes import has_base, qualified_name
from dockyard.runtimes.formats import check_format, check_suffix, copy_model_file, model_file_errors
from dockyard.runtimes.skops_files import import_skops_io, read_skops
from dockyard.runtimes.trust import refused_types

logger = logging.getLogger(__name__)

FRAMEWORK = "sklearn"
EXTRA = ""
tabular = True
SKOPS = "skops"
PICKLE = "pickle"
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def is_model(obj: object) -> bool:
    """True for anything built on ``sklearn.base.BaseEstimator``.

    xgboost and lightgbm estimators are such objects too; ``detect`` asks their modules first.
    """
    return has_base(obj, "sklearn", ("BaseEstimator",))


def save(obj: Any, folder: Path, *, allow_pickle: bool = False) -> SavedModel:
    """Write an estimator as ``model.skops``, or take in a ``.skops`` (or, if allowed, pickle) file.

    A pickle runs arbitrary code when loaded, so a ``.pkl``/``.pickle``/``.joblib`` file is taken
    only with ``allow_pickle=True``; it is copied as it is and stored with format ``pickle``.
    """
    if isinstance(obj, Path):
        return _save_file(obj, folder, allow_pickle)
    if not is_model(obj):
        raise InvalidInput(f"{qualified_name(obj)} is not a scikit-learn estimator")
    skops_io = import_skops_io()
    path = folder / "model.skops"
    with model_file_errors(FRAMEWORK, f"saving {type(obj).__name__} with skops"):
        skops_io.dump(obj, path)
    return SavedModel(path, SKOPS, {"estimator": qualified_name(obj)})


def load(path: Path, opts: LoadOptions) -> SklearnRuntime:
    """Load a stored estimator; a pickle needs ``opts.allow_pickle``; skops types need approval."""
    check_format(FRAMEWORK, opts, SKOPS, PICKLE)
    if opts.format == PICKLE:
        if not opts.allow_pickle:
            raise InvalidInput(
                f"{path.name} is a pickle, which runs arbitrary code when loaded; "
                "this version was not registered with --allow-pickle"
            )
        import joblib

        with model_file_errors(FRAMEWORK, f"loading the pickle {path.name}"):
            estimator = joblib.load(path)
    else:
        estimator = _load_skops(path, opts.trusted_types)
    if not callable(getattr(estimator, "predict", None)):
        raise InvalidInput(f"{path.name} holds a {qualified_name(estimator)}, which has no predict")
    return SklearnRuntime(estimator)


ARGMAX_CLASSIFIERS = frozenset(
    {
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.naive_bayes.GaussianNB",
    }
)
"""Classifiers whose ``predict`` is ``classes_[argmax(predict_proba)]`` (up to exact ties): when
both outputs are wanted, one call to ``predict_proba`` gives both."""


INPUT_CHECK_ONLY = frozenset(
    {
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.linear_model._ridge.RidgeClassifier",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.linear_model._stochastic_gradient.SGDRegressor",
        "sklearn.naive_bayes.GaussianNB",
    }
)
"""Estimators (not pipelines or other composites) whose predictions check the finiteness of
nothing but the request's own rows: once the runtime has seen those rows are finite, scikit-learn's
repeat of that check (``assume_finite``) can be skipped without hiding a NaN from anything."""


def _final_estimator(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


class SklearnRuntime:
    """A fitted estimator: ``predict`` always, ``predict_proba`` when the estimator has it.

    A model fitted on a DataFrame knows its feature names and warns when given a bare array. The
    input contract guarantees columns in feature order, so a 2-D array is wrapped in a DataFrame
    with those names: exact, and thread-safe where silencing the warning (``catch_warnings``,
    process-global state) would not be.
    """

    framework = FRAMEWORK
    fork_safe = True

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.output_names: tuple[str, ...] = (
            ("predict", "predict_proba") if hasattr(estimator, "predict_proba") else ("predict",)
        )
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names: list[str] | None = None if names is None else [str(n) for n in names]
        self._pandas = (
            None if self.feature_names is None else import_extra("pandas", "pandas", "pandas")
        )
        self._input_check_only = qualified_name(estimator) in INPUT_CHECK_ONLY
        import sklearn  # loaded already: the estimator is one of its objects

        self._get_config = sklearn.get_config
        self._set_config = sklearn.set_config
        final = _final_estimator(estimator)
        self._classes: np.ndarray | None = (
            np.asarray(final.classes_)
            if qualified_name(final) in ARGMAX_CLASSIFIERS and hasattr(final, "classes_")
            else None
        )

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        with prediction_errors(FRAMEWORK):
            if not (self._input_check_only and _all_finite(x)):
                return self._predict(x, selected)
            # scikit-learn's own finiteness check costs ~15 µs a call; these rows just passed it.
            # set_config is thread-local, and cheaper than config_context (~0.8 µs against ~5).
            assumed = self._get_config()["assume_finite"]
            self._set_config(assume_finite=True)
            try:
                return self._predict(x, selected)
            finally:
                self._set_config(assume_finite=assumed)

    def _predict(self, x: Any, selected: tuple[str, ...]) -> dict[str, np.ndarray]:
        table = self._table(x)
        if self._classes is not None and len(selected) == 2:
            proba = np.asarray(self.estimator.predict_proba(table))
            return {"predict": self._classes[proba.argmax(axis=1)], "predict_proba": proba}
        return {name: np.asarray(getattr(self.estimator, name)(table)) for name in selected}

    def _table(self, x: Any) -> Any:
        if self._pandas is not None and isinstance(x, np.ndarray) and x.ndim == 2:
            return self._pandas.DataFrame(x, columns=self.feature_names)
        return x


def _all_finite(x: Any) -> bool:
    """True for a numeric array holding no NaN or infinity (integers and booleans always)."""
    if not isinstance(x, np.ndarray):
        return False
    kind = x.dtype.kind
    if kind in "biu":
        return True
    if kind != "f":
        return False
    return bool(np.count_nonzero(np.isfinite(x)) == x.size)  # cheaper than .all()


def _save_file(path: Path, folder: Path, allow_pickle: bool) -> SavedModel:
    check_suffix(FRAMEWORK, path, SKOPS_SUFFIXES + PICKLE_SUFFIXES)
    suffix = path.suffix.lower()
    if suffix in SKOPS_SUFFIXES:
        return SavedModel(copy_model_file(path, folder, "model.skops"), SKOPS, {})
    if not allow_pickle:
        raise InvalidInput(
            f"{path.name} is a pickle, which runs arbitrary code when loaded; "
            "save the model with skops (skops.io.dump) instead, "
            "or pass --allow-pickle (allow_pickle=True) if you trust this file"
        )
    logger.warning("taking in the pickle %s because allow_pickle was given", path.name)
    return SavedModel(copy_model_file(path, folder, f"model{suffix}"), PICKLE, {})


def _load_skops(path: Path, operator_trusted: Sequence[str]) -> Any:
    """Check the file's sizes and every type it names, then load those very bytes."""
    skops_io = import_skops_io()
    with model_file_errors(FRAMEWORK, f"reading the skops file {path.name}"):
        checked = read_skops(path)
    refused = refused_types(checked.names, operator_trusted)
    if refused:
        raise InvalidInput(
            f"{path.name} contains types Dockyard does not trust: {', '.join(refused)}; "
            "if you trust them, pass each with --trusted-type at registration"
        )
    with model_file_errors(FRAMEWORK, f"loading the skops file {path.name}"):
        return skops_io.loads(checked.data, trusted=sorted(checked.names))
