"""Tree ensembles compiled by ``dockyard optimize``: Treelite models, predicted with GTIL (or,
format ``tl2cgen-so``, native code tl2cgen built from one: ``treelite_native``).

The artifact is Treelite's own serialized format (``Model.serialize_bytes``), never a pickle. GTIL
answers raw scores or probabilities shaped ``(rows, targets, classes)``; the artifact's options
(its *head*) say how those become the outputs of the version it was converted from — names,
dtypes and shapes — so a served optimized version answers exactly as its source does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from dockyard.runtimes.formats import check_format, model_file_errors
from dockyard.runtimes.treelite_native import NATIVE_FORMAT, load_native

FRAMEWORK = "treelite"
EXTRA = "optimize"
tabular = True
FORMAT = "treelite"
ROLES = ("label", "proba", "value")
"""What an output is made of: the likeliest class, the class probabilities, or the raw value."""
SERIAL_ROWS = 256
"""Batches up to this many rows are predicted on one thread: GTIL's thread pool costs more than
it saves on a few rows, and the serving batcher already keeps a core busy per model."""


def is_model(obj: object) -> bool:
    """True for a ``treelite.Model``."""
    return has_base(obj, "treelite", ("Model",))


def save(obj: Any, folder: Path, *, head: Mapping[str, Any] | None = None) -> SavedModel:
    """Write a ``treelite.Model`` as ``model.treelite`` in Treelite's serialized format.

    ``head``: how GTIL's answer becomes the outputs (see ``TreeliteRuntime``); by default one
    output, ``predict``, the raw value as float64.
    """
    if not is_model(obj):
        raise InvalidInput(f"{qualified_name(obj)} is not a treelite.Model")
    target = folder / "model.treelite"
    with model_file_errors(FRAMEWORK, "serialising the Treelite model"):
        target.write_bytes(bytes(obj.serialize_bytes()))
    options = dict(head) if head is not None else default_head()
    check_head(options)
    return SavedModel(target, FORMAT, options)


def default_head() -> dict[str, Any]:
    """One output ``predict``: the model's value per row, float64."""
    return {"outputs": [{"name": "predict", "role": "value", "dtype": "float64"}]}


def load(path: Path, opts: LoadOptions) -> TreeliteRuntime:
    """Deserialize the model from Treelite's own format (or load the native library tl2cgen
    built from one, ``treelite_native``) and check its head."""
    check_format(FRAMEWORK, opts, FORMAT, NATIVE_FORMAT)
    head = dict(opts.options)
    check_head(head)
    if opts.format == NATIVE_FORMAT:
        predictor, predict = load_native(path, opts)
        return TreeliteRuntime(predictor, predict, head)
    treelite = import_extra("treelite", FRAMEWORK, EXTRA)
    gtil = import_extra("treelite.gtil", FRAMEWORK, EXTRA)
    with model_file_errors(FRAMEWORK, f"loading {path.name}"):
        model = treelite.Model.deserialize_bytes(path.read_bytes())
    return TreeliteRuntime(model, gtil.predict, head)


def check_head(head: Mapping[str, Any]) -> None:
    """Refuse a head whose outputs are not each a known role with a dtype, or whose labels have
    no classes to name them."""
    outputs = head.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise InvalidInput("a treelite artifact's options must list its outputs")
    for output in outputs:
        if not isinstance(output, Mapping) or output.get("role") not in ROLES:
            raise InvalidInput(f"treelite output {output!r} needs a role among {ROLES}")
        np.dtype(str(output.get("dtype", "float64")))
        if output["role"] == "label" and not head.get("classes"):
            raise InvalidInput("a treelite classifier's options must list its classes")


class TreeliteRuntime:
    """A Treelite model: a 2-D table in, the head's outputs out.

    ``predict_fn`` is ``treelite.gtil.predict``; GTIL is thread-safe and holds no state between
    calls, so the loaded model is shared by forked workers as any array is.
    """

    framework = FRAMEWORK
    fork_safe = True

    def __init__(self, model: Any, predict_fn: Any, head: Mapping[str, Any]) -> None:
        self.model = model
        self._predict_fn = predict_fn
        self._outputs: dict[str, tuple[str, np.dtype[Any]]] = {
            str(item["name"]): (str(item["role"]), np.dtype(str(item.get("dtype", "float64"))))
            for item in head["outputs"]
        }
        self.output_names: tuple[str, ...] = tuple(self._outputs)
        classes = head.get("classes")
        label_dtype = next(
            (dtype for role, dtype in self._outputs.values() if role == "label"), None
        )
        self._classes: np.ndarray | None = (
            None if classes is None else np.asarray(classes, dtype=label_dtype)
        )
        self._input_dtype = np.dtype(str(head.get("input_dtype", "float64")))
        round_to = np.dtype(str(head.get("round_to", self._input_dtype)))
        self._round_to = None if round_to.itemsize >= self._input_dtype.itemsize else round_to
        """A precision the features are rounded to first (scikit-learn's forests compare float32
        features with float64 thresholds)."""

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        table = np.asarray(x, dtype=self._input_dtype)
        if self._round_to is not None:
            table = table.astype(self._round_to).astype(self._input_dtype)
        threads = 1 if len(table) <= SERIAL_ROWS else -1
        with prediction_errors(FRAMEWORK):
            raw = np.asarray(self._predict_fn(self.model, table, nthread=threads))
        scores = raw.reshape(len(table), -1)
        return {name: self._output(name, scores) for name in selected}

    def _output(self, name: str, scores: np.ndarray) -> np.ndarray:
        role, dtype = self._outputs[name]
        if role == "value":
            values = scores[:, 0] if scores.shape[1] == 1 else scores
            return values.astype(dtype, copy=False)
        proba = _probabilities(scores)
        if role == "proba":
            return proba.astype(dtype, copy=False)
        assert self._classes is not None  # check_head: a label output comes with classes
        labels: np.ndarray = self._classes[proba.argmax(axis=1)]
        return labels


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """A classifier's probabilities per class: a binary model answers the positive class's."""
    if scores.shape[1] == 1:
        positive = scores[:, 0]
        return np.column_stack([1.0 - positive, positive])
    return scores
