"""PyTorch modules (stored as TorchScript) to ONNX with torch's TorchScript exporter, run by
onnxruntime.

The graph's inputs and outputs take the signature's names, every ``-1`` dimension stays dynamic,
and the example the exporter traces is built from the signature (two rows of zeros).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from dockyard.datatypes import numpy_dtype
from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import (
    EXTRA,
    Converted,
    Source,
    converter_errors,
    package_version,
)
from dockyard.optimize.onnx_outputs import adapt_outputs
from dockyard.registry.records import TensorSpec
from dockyard.runtimes.base import import_extra

NAME = "torch.onnx"
PACKAGE = "torch"
EXAMPLE_ROWS = 2
CPU = ["CPUExecutionProvider"]


class TorchOnnxConverter:
    """PyTorch (TorchScript) → ONNX."""

    name = NAME
    target = "onnx"
    frameworks: tuple[str, ...] = ("torch",)

    def convert(self, source: Source) -> Converted:
        if source.framework != "torch":
            raise OptimizationRefused(f"{NAME} converts PyTorch models only")
        signature = source.signature
        if signature.tabular or any(spec.datatype == "BYTES" for spec in signature.inputs):
            raise OptimizationRefused(f"{NAME} takes numeric tensors")
        version = package_version(PACKAGE)
        torch = import_extra("torch", "torch", "torch")
        onnx = import_extra("onnx", "onnx", EXTRA)
        ort = import_extra("onnxruntime", "onnx", EXTRA)
        examples = tuple(torch.from_numpy(_example(spec)) for spec in signature.inputs)
        names = [spec.name for spec in (*signature.inputs, *signature.outputs)]
        dynamic = {
            spec.name: {axis: f"{spec.name}_{axis}" for axis in _dynamic_axes(spec)}
            for spec in (*signature.inputs, *signature.outputs)
        }
        buffer = io.BytesIO()
        with converter_errors(NAME), warnings.catch_warnings():
            # The exporter's notices (TorchScript and this exporter are deprecated upstream):
            # not ours to fix, and a test run (warnings as errors) must convert as a user's does.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                source.model.cpu().eval(),
                examples,
                buffer,
                input_names=names[: len(signature.inputs)],
                output_names=names[len(signature.inputs) :],
                dynamic_axes=dynamic,
                dynamo=False,
            )
            model = onnx.load_from_string(buffer.getvalue())
            adapt_outputs(onnx, model, signature.outputs)
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


def _example(spec: TensorSpec) -> np.ndarray:
    shape = [EXAMPLE_ROWS if axis == 0 else max(dim, 1) for axis, dim in enumerate(spec.shape)]
    dtype: Any = numpy_dtype(spec.datatype)
    return np.zeros(shape, dtype=dtype)


def _dynamic_axes(spec: TensorSpec) -> list[int]:
    return [axis for axis, dim in enumerate(spec.shape) if axis == 0 or dim < 0]
