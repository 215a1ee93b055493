"""Predicting in-process: ``dockyard.load_model`` and offline scoring (``dockyard predict``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dockyard.registry.plans import InputPlan
from dockyard.registry.records import ModelVersion, Signature
from dockyard.runtimes.base import Runtime
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace

CHUNK_ROWS = 1024


@dataclass
class LoadedModel:
    """A registered version loaded in this process; ``predict`` validates like the server does."""

    version: ModelVersion
    runtime: Runtime
    plan: InputPlan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = InputPlan(self.version.signature)

    def predict(self, data: Any, outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Predict a 2-D array, a DataFrame, or a mapping of input names to arrays."""
        signature = self.version.signature
        x = self.plan.prepare(as_tensors(data, signature))
        return self.runtime.predict(x, tuple(outputs))

    def predict_in_chunks(
        self,
        columns: Mapping[str, np.ndarray],
        progress: Callable[[int], None] | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> dict[str, np.ndarray]:
        """Score many rows in chunks (bounded memory), reporting rows done to ``progress``."""
        total = len(next(iter(columns.values()))) if columns else 0
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, total, chunk_rows):
            chunk = {name: values[start : start + chunk_rows] for name, values in columns.items()}
            parts.append(self.predict(chunk))
            if progress is not None:
                progress(len(next(iter(chunk.values()))))
        if not parts:
            return {}
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def as_tensors(data: Any, signature: Signature) -> dict[str, np.ndarray]:
    """Name the arrays of ``data`` the way a V2 request would.

    A bare array is the whole feature matrix of a tabular model, or the one input of a tensor model.
    """
    if isinstance(data, Mapping):
        return {str(name): np.asarray(values) for name, values in data.items()}
    columns = getattr(data, "columns", None)
    if columns is not None:
        return {str(name): data[name].to_numpy() for name in columns}
    name = (
        "input-0" if signature.tabular or len(signature.inputs) != 1 else signature.inputs[0].name
    )
    return {name: np.asarray(data)}


def load_model(workspace: Workspace, ref: str) -> LoadedModel:
    version = workspace.resolve(ref)
    return LoadedModel(version=version, runtime=load_for_serving(workspace, version))
