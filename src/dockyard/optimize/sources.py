"""The model object inside a loaded runtime, which the converters read (never a file: the runtime
has already verified and loaded the stored artifact)."""

from __future__ import annotations

from typing import Any

from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import Source
from dockyard.registry.records import ModelVersion

MODEL_ATTRIBUTES = {
    "sklearn": "estimator",
    "xgboost": "model",
    "lightgbm": "booster",
    "torch": "module",
}
"""Where each framework's runtime keeps the model it loaded."""


def source_of(version: ModelVersion, runtime: Any) -> Source:
    """``version`` and the model its loaded ``runtime`` holds; refused for a framework no
    converter reads (ONNX is already compiled, a Python function is code)."""
    attribute = MODEL_ATTRIBUTES.get(version.framework)
    if attribute is None or not hasattr(runtime, attribute):
        raise OptimizationRefused(
            f"{version.ref} is a {version.framework} model; dockyard optimize converts "
            f"{', '.join(sorted(MODEL_ATTRIBUTES))} models"
        )
    return Source(
        framework=version.framework,
        model=getattr(runtime, attribute),
        signature=version.signature,
        options=dict(version.artifact.options),
    )
