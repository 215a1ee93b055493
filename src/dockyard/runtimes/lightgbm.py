"""LightGBM models, stored as LightGBM's native text and served by a bare ``lightgbm.Booster``.

A classifier's labels live in the artifact options, so class predictions come back as the labels
it was trained on while the Booster only yields probabilities.
"""

from __future__ import annotations

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

FRAMEWORK = "lightgbm"
EXTRA = "lightgbm"
tabular = True
FORMAT = "lightgbm-txt"
SUFFIXES = (".txt",)
CLASSIFIER_OBJECTIVES = frozenset({"binary", "multiclass", "multiclassova"})
"""Objectives whose Booster output is class probabilities; anything else is served as it comes."""


def is_model(obj: object) -> bool:
    """True for a ``lightgbm.Booster`` or any of lightgbm's sklearn wrappers."""
    return has_base(obj, "lightgbm", ("LGBMModel", "Booster"))


def save(obj: Any, folder: Path) -> SavedModel:
    """Write the booster as ``model.txt``; options hold the objective and a classifier's labels.

    A bare Booster or ``.txt`` file with a classification objective gets the labels ``0..K-1``
    (``0, 1`` for binary), which is what LightGBM itself trained it on.
    """
    if isinstance(obj, Path):
        check_suffix(FRAMEWORK, obj, SUFFIXES)
        lgb = import_extra("lightgbm", FRAMEWORK, EXTRA)
        with model_file_errors(FRAMEWORK, f"reading {obj.name}"):
            booster, classes = lgb.Booster(model_file=str(obj)), None
    elif is_model(obj):
        with model_file_errors(FRAMEWORK, f"saving the {type(obj).__name__}"):
            booster = getattr(obj, "booster_", obj)
            classes = obj.classes_.tolist() if hasattr(obj, "classes_") else None
    else:
        raise InvalidInput(f"{qualified_name(obj)} is not a LightGBM model or a .txt model file")
    with model_file_errors(FRAMEWORK, "writing the booster as text"):
        text = booster.model_to_string()
    objective = _objective(text)
    if classes is None and objective in CLASSIFIER_OBJECTIVES:
        classes = list(range(max(2, booster.num_model_per_iteration())))
    target = folder / "model.txt"
    target.write_text(text, encoding="utf-8")
    return SavedModel(target, FORMAT, {"objective": objective, "classes": classes})


def load(path: Path, opts: LoadOptions) -> LightGBMRuntime:
    """Load the booster; ``classes`` in the options make it a classifier."""
    check_format(FRAMEWORK, opts, FORMAT)
    lgb = import_extra("lightgbm", FRAMEWORK, EXTRA)
    with model_file_errors(FRAMEWORK, f"loading {path.name}"):
        booster = lgb.Booster(model_file=str(path))
    classes = opts.options.get("classes")
    return LightGBMRuntime(booster, None if classes is None else np.asarray(classes))


class LightGBMRuntime:
    """A Booster; with ``classes``, ``predict`` maps the likeliest class to its label.

    Binary boosters yield the positive class's probability; ``predict_proba`` has both columns and
    ``predict`` picks the first on a tie, as ``LGBMClassifier`` does.
    """

    framework = FRAMEWORK
    fork_safe = True

    def __init__(self, booster: Any, classes: np.ndarray | None) -> None:
        self.booster = booster
        self.classes = classes
        self.output_names: tuple[str, ...] = (
            ("predict",) if classes is None else ("predict", "predict_proba")
        )

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        with prediction_errors(FRAMEWORK):
            raw = np.asarray(self.booster.predict(x))
        if self.classes is None:
            return {"predict": raw}
        proba = raw if raw.ndim == 2 else np.column_stack([1.0 - raw, raw])
        results = {"predict_proba": proba}
        if "predict" in selected:
            results["predict"] = self.classes[np.argmax(proba, axis=1)]
        return {name: results[name] for name in selected}


def _objective(text: str) -> str:
    """The objective's name from the model text's ``objective=binary sigmoid:1`` header line."""
    for line in text.splitlines():
        if line.startswith("objective="):
            return line.removeprefix("objective=").split(" ")[0]
        if line.startswith("Tree="):
            break
    return "unknown"
