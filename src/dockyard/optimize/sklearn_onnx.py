"""scikit-learn estimators and pipelines to ONNX with skl2onnx, run by onnxruntime.

The graph takes one float64 table (float32 when a part of the model has no double kernels) and
gives the source's outputs (``onnx_outputs``). Classifiers are converted without ZipMap, so
probabilities are one ``[N, C]`` tensor as ``predict_proba`` gives them.
"""

from __future__ import annotations

import warnings
from typing import Any

from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import (
    Converted,
    Source,
    converter_errors,
    package_version,
    refuse_categorical,
)
from dockyard.optimize.onnx_outputs import adapt_outputs
from dockyard.runtimes.base import import_extra

INPUT_NAME = "X"
TREE_ENSEMBLE_GAP = "Unable to create node 'TreeEnsemble"
"""skl2onnx 1.20 with onnx 1.23 fails so on scikit-learn 1.9's HistGradientBoosting: the
TreeEnsemble node's attribute lists mix plain ints with np.uint32 values, which onnx refuses."""
CPU = ["CPUExecutionProvider"]
BOOLEAN_INTS = r".*Expected an int, got a boolean"
PRECISIONS = ("DoubleTensorType", "FloatTensorType")
"""Tried in order: float64 keeps scikit-learn's own precision."""


class Skl2OnnxConverter:
    """scikit-learn → ONNX."""

    name = "skl2onnx"
    target = "onnx"
    frameworks: tuple[str, ...] = ("sklearn",)

    def convert(self, source: Source) -> Converted:
        if source.framework != "sklearn":
            raise OptimizationRefused(f"{self.name} converts scikit-learn models only")
        refuse_categorical(self.name, source.signature)
        version = package_version(self.name)
        skl2onnx = import_extra("skl2onnx", self.name, "optimize")
        data_types = import_extra("skl2onnx.common.data_types", self.name, "optimize")
        onnx = import_extra("onnx", "onnx", "optimize")
        ort = import_extra("onnxruntime", "onnx", "optimize")
        features = len(source.signature.inputs)
        failure: OptimizationRefused | None = None
        for precision in PRECISIONS:
            tensor_type = getattr(data_types, precision)([None, features])
            try:
                with converter_errors(self.name), warnings.catch_warnings():
                    # protobuf's notice about skl2onnx's booleans in int lists: not ours to fix,
                    # and a test run (warnings as errors) must convert as a user's run does.
                    warnings.filterwarnings("ignore", BOOLEAN_INTS, DeprecationWarning)
                    model = skl2onnx.convert_sklearn(
                        source.model,
                        initial_types=[(INPUT_NAME, tensor_type)],
                        options=_options(source.model),
                    )
                    adapt_outputs(onnx, model, source.signature.outputs)
                    # onnxruntime may lack a kernel for the graph (a double TreeEnsemble): the
                    # next precision may have one.
                    ort.InferenceSession(model.SerializeToString(), providers=CPU)
            except OptimizationRefused as exc:
                failure = failure or exc
                continue
            return Converted(
                framework="onnx",
                format="onnx",
                filename="model.onnx",
                payload=model.SerializeToString(),
                options={},
                converter=self.name,
                converter_version=version,
            )
        assert failure is not None
        if TREE_ENSEMBLE_GAP in failure.message:
            raise OptimizationRefused(
                f"{self.name} {version} cannot build the TreeEnsemble node of this "
                f"{_final_name(source.model)} (a known converter gap: its attribute lists mix "
                "ints with np.uint32 values); the treelite target converts tree ensembles"
            ) from failure
        raise failure


def _final_name(model: Any) -> str:
    steps = getattr(model, "steps", None)
    return type(steps[-1][1] if steps else model).__name__


def _options(model: Any) -> dict[int, dict[str, Any]]:
    """No ZipMap for the final classifier (probabilities stay one ``[N, C]`` tensor)."""
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    return {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else {}
