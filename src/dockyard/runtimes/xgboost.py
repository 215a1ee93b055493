"""XGBoost models, stored in XGBoost's own UBJSON format and reloaded into the same wrapper."""

from __future__ import annotations

import json
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
from dockyard.runtimes.formats import check_format, check_suffix, model_file_errors

FRAMEWORK = "xgboost"
EXTRA = "xgboost"
tabular = True
FORMAT = "xgboost-ubj"
SUFFIXES = (".json", ".ubj")
CLASSIFIER = "XGBClassifier"
REGRESSOR = "XGBRegressor"
BOOSTER = "Booster"
ESTIMATORS = (CLASSIFIER, REGRESSOR, BOOSTER)
"""What a model is reloaded as; any other sklearn wrapper (a ranker, say) is kept as its Booster."""


def is_model(obj: object) -> bool:
    """True for an ``xgboost.Booster`` or any of xgboost's sklearn wrappers."""
    return has_base(obj, "xgboost", ("XGBModel", "Booster"))


def save(obj: Any, folder: Path) -> SavedModel:
    """Write the model as ``model.ubj``; a ``.json``/``.ubj`` file is loaded and written again.

    A file saved from a wrapper records its estimator type, so it reloads as that wrapper.
    """
    target = folder / "model.ubj"
    if isinstance(obj, Path):
        check_suffix(FRAMEWORK, obj, SUFFIXES)
        xgb = import_extra("xgboost", FRAMEWORK, EXTRA)
        with model_file_errors(FRAMEWORK, f"reading {obj.name}"):
            estimator = _estimator_in_file(xgb, obj)
            model = getattr(xgb, estimator)()
            model.load_model(str(obj))
    elif is_model(obj):
        estimator = _estimator_of(obj)
        model = obj.get_booster() if estimator == BOOSTER and hasattr(obj, "get_booster") else obj
    else:
        raise InvalidInput(f"{qualified_name(obj)} is not an XGBoost model or a .json/.ubj file")
    with model_file_errors(FRAMEWORK, f"saving the {estimator}"):
        model.save_model(str(target))
    return SavedModel(target, FORMAT, {"estimator": estimator})


def load(path: Path, opts: LoadOptions) -> XGBoostRuntime:
    """Load into the wrapper class recorded at save."""
    check_format(FRAMEWORK, opts, FORMAT)
    estimator = str(opts.options.get("estimator", BOOSTER))
    if estimator not in ESTIMATORS:
        raise InvalidInput(f"unknown xgboost estimator {estimator!r}; expected one of {ESTIMATORS}")
    xgb = import_extra("xgboost", FRAMEWORK, EXTRA)
    with model_file_errors(FRAMEWORK, f"loading {path.name}"):
        model = getattr(xgb, estimator)()
        model.load_model(bytearray(path.read_bytes()))
    return XGBoostRuntime(model, xgb if estimator == BOOSTER else None)


class XGBoostRuntime:
    """A classifier (``predict``, ``predict_proba``), a regressor or a bare Booster (``predict``).

    ``xgb`` is given for a bare Booster, which predicts from a DMatrix; the wrappers take the table.
    """

    framework = FRAMEWORK
    fork_safe = True

    def __init__(self, model: Any, xgb: Any = None) -> None:
        self.model = model
        self._xgb = xgb
        self.output_names: tuple[str, ...] = (
            ("predict", "predict_proba") if hasattr(model, "predict_proba") else ("predict",)
        )

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        with prediction_errors(FRAMEWORK):
            if self._xgb is not None:
                return {
                    "predict": np.asarray(
                        self.model.predict(self._xgb.DMatrix(x, enable_categorical=True))
                    )
                }
            return {name: np.asarray(getattr(self.model, name)(x)) for name in selected}


def _estimator_of(obj: Any) -> str:
    names = {cls.__name__ for cls in type(obj).__mro__}
    return next((name for name in (CLASSIFIER, REGRESSOR) if name in names), BOOSTER)


def _estimator_in_file(xgb: Any, path: Path) -> str:
    """The wrapper a model file was saved from (its ``scikit_learn`` attribute), else Booster."""
    booster = xgb.Booster()
    booster.load_model(str(path))
    kind = json.loads(booster.attr("scikit_learn") or "{}").get("_estimator_type")
    return {"classifier": CLASSIFIER, "regressor": REGRESSOR}.get(kind, BOOSTER)
