"""XGBoost and LightGBM boosters to ONNX with onnxmltools, run by onnxruntime.

Both convert to float32 TreeEnsemble nodes (onnxmltools takes float inputs for their classifiers,
and its float64 XGBoost regressor answers wrongly), so the graph takes a float32 table — as
XGBoost compares features itself. Outputs are made the source's (``onnx_outputs``).
"""

from __future__ import annotations

import warnings
from typing import Any

from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import (
    EXTRA,
    Converted,
    Source,
    converter_errors,
    package_version,
    refuse_categorical,
)
from dockyard.optimize.onnx_outputs import adapt_outputs
from dockyard.runtimes.base import import_extra

NAME = "onnxmltools"
INPUT_NAME = "X"
FRAMEWORKS = ("xgboost", "lightgbm")
CPU = ["CPUExecutionProvider"]


class OnnxmltoolsConverter:
    """XGBoost and LightGBM → ONNX."""

    name = NAME
    target = "onnx"
    frameworks: tuple[str, ...] = FRAMEWORKS

    def convert(self, source: Source) -> Converted:
        if source.framework not in FRAMEWORKS:
            raise OptimizationRefused(f"{NAME} converts {' and '.join(FRAMEWORKS)} models only")
        refuse_categorical(NAME, source.signature)
        version = package_version(NAME)
        onnxmltools = import_extra("onnxmltools", NAME, EXTRA)
        data_types = import_extra("onnxmltools.convert.common.data_types", NAME, EXTRA)
        onnx = import_extra("onnx", "onnx", EXTRA)
        ort = import_extra("onnxruntime", "onnx", EXTRA)
        inputs = [(INPUT_NAME, data_types.FloatTensorType([None, len(source.signature.inputs)]))]
        with converter_errors(NAME), warnings.catch_warnings():
            # The converters' own deprecation notices (protobuf, onnx helpers): not ours to fix,
            # and a test run (warnings as errors) must convert as a user's run does.
            warnings.simplefilter("ignore", DeprecationWarning)
            model = _convert(onnxmltools, source, inputs)
            adapt_outputs(onnx, model, source.signature.outputs)
            ort.InferenceSession(model.SerializeToString(), providers=CPU)
        return Converted(
            framework="onnx",
            format="onnx",
            filename="model.onnx",
            payload=model.SerializeToString(),
            options={},
            converter=NAME,
            converter_version=version,
        )


def _convert(onnxmltools: Any, source: Source, inputs: list[Any]) -> Any:
    if source.framework == "xgboost":
        return onnxmltools.convert_xgboost(source.model, initial_types=inputs)
    return onnxmltools.convert_lightgbm(source.model, initial_types=inputs, zipmap=False)
