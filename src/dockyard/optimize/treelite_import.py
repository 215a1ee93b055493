"""Tree ensembles to Treelite: scikit-learn's forests and gradient boosting, XGBoost and LightGBM
boosters, predicted with GTIL (``dockyard.runtimes.treelite``).

The artifact's head says how GTIL's scores become the source's outputs: a classifier's labels
(its classes at the likeliest probability), its probabilities, or a regressor's values, each in
the source signature's dtype. XGBoost compares float32 features with float32 thresholds, so its
models are fed float32, as XGBoost itself feeds them.
"""

from __future__ import annotations

from typing import Any

from dockyard.datatypes import numpy_dtype
from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import (
    EXTRA,
    Converted,
    Source,
    converter_errors,
    package_version,
    refuse_categorical,
)
from dockyard.runtimes.base import import_extra
from dockyard.runtimes.classes import qualified_name
from dockyard.runtimes.treelite import FORMAT, check_head

NAME = "treelite"
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm")
CLASSIFIER_ROLES = {"predict": "label", "predict_proba": "proba"}


class TreeliteConverter:
    """scikit-learn tree ensembles, XGBoost and LightGBM → Treelite."""

    name = NAME
    target = "treelite"
    frameworks: tuple[str, ...] = FRAMEWORKS

    def convert(self, source: Source) -> Converted:
        if source.framework not in FRAMEWORKS:
            raise OptimizationRefused(f"{NAME} converts tree ensembles of {', '.join(FRAMEWORKS)}")
        refuse_categorical(NAME, source.signature)
        version = package_version(NAME)
        treelite = import_extra("treelite", NAME, EXTRA)
        with converter_errors(NAME):
            model, classes, input_dtype = import_trees(treelite, source)
            payload = bytes(model.serialize_bytes())
        head = {
            "outputs": _outputs(source, classes),
            # XGBoost's models take float32 (their thresholds are float32); scikit-learn's
            # forests take float64 rounded to float32 first, as scikit-learn rounds them.
            "input_dtype": "float32" if source.framework == "xgboost" else "float64",
            "round_to": input_dtype,
            **({} if classes is None else {"classes": classes}),
        }
        check_head(head)
        return Converted(
            framework="treelite",
            format=FORMAT,
            filename="model.treelite",
            payload=payload,
            options=head,
            converter=NAME,
            converter_version=version,
        )


def import_trees(treelite: Any, source: Source) -> tuple[Any, list[Any] | None, str]:
    """(the Treelite model, the classifier's classes or None, the precision its framework
    compares features in); refused for a model that is no tree ensemble."""
    model = source.model
    if source.framework == "lightgbm":
        classes = source.options.get("classes")
        return treelite.frontend.from_lightgbm(model), classes, "float64"
    if source.framework == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        classes = _classes(model) if hasattr(model, "predict_proba") else None
        return treelite.frontend.from_xgboost(booster), classes, "float32"
    if hasattr(model, "steps"):
        raise OptimizationRefused(
            f"{NAME} takes a tree ensemble; a Pipeline's other steps are not trees (the ONNX "
            "target converts pipelines)"
        )
    sklearn_base = import_extra("sklearn.base", "sklearn", "")
    if not (sklearn_base.is_classifier(model) or sklearn_base.is_regressor(model)):
        raise OptimizationRefused(f"{NAME} converts classifiers and regressors only")
    classes = _classes(model) if sklearn_base.is_classifier(model) else None
    with converter_errors(NAME):
        imported = treelite.sklearn.import_model(model)
    # scikit-learn's trees and forests compare float32 features with float64 thresholds; its
    # histogram gradient boosting compares float64 features.
    rounding = "float64" if _is_hist_gradient_boosting(model) else "float32"
    return imported, classes, rounding


def _is_hist_gradient_boosting(model: Any) -> bool:
    return "HistGradientBoosting" in type(model).__name__


def _classes(model: Any) -> list[Any]:
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise OptimizationRefused(f"{qualified_name(model)} does not say its classes")
    return [item.item() if hasattr(item, "item") else item for item in classes]


def _outputs(source: Source, classes: list[Any] | None) -> list[dict[str, str]]:
    """Each source output with its role and dtype; an output no role makes is refused."""
    outputs = []
    for spec in source.signature.outputs:
        role = CLASSIFIER_ROLES.get(spec.name) if classes is not None else None
        if classes is None and spec.name == "predict":
            role = "value"
        if role is None:
            raise OptimizationRefused(f"{NAME} cannot produce the output {spec.name!r}")
        outputs.append({"name": spec.name, "role": role, "dtype": str(numpy_dtype(spec.datatype))})
    return outputs
