"""An ONNX graph's outputs made into its source version's: the same names, element types and
ranks, so the served optimized version answers exactly as the source does.

Converters name outputs their own way (skl2onnx: ``label``, ``probabilities``, ``variable``),
may compute in another precision and give a regressor's values as ``[N, 1]``. A Cast, a Reshape
and an Identity per output, appended to the graph, fix all three inside the model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dockyard.datatypes import numpy_dtype
from dockyard.errors import OptimizationRefused
from dockyard.registry.records import TensorSpec

PREFIX = "dockyard_out"
DEFAULT_OPSET = 13
"""Cast, Reshape and Identity as added here exist since opset 13, which onnxruntime runs."""
"""Names of the tensors added here (a converter's own names never start so)."""


def adapt_outputs(onnx: Any, model: Any, specs: Sequence[TensorSpec]) -> Any:
    """``model`` (a ModelProto, changed in place and returned) whose graph outputs are ``specs``,
    in order: the converter's first output becomes the first spec, and so on; outputs past the
    specs are dropped."""
    helper = onnx.helper
    graph = model.graph
    produced = list(graph.output)
    if len(produced) < len(specs):
        names = ", ".join(spec.name for spec in specs)
        raise OptimizationRefused(
            f"the converted graph has {len(produced)} outputs for the source's {names}"
        )
    outputs = []
    for index, (output, spec) in enumerate(zip(produced, specs, strict=False)):
        current = output.name
        tensor_type = output.type.tensor_type
        wanted = element_type(onnx, spec.datatype)
        if tensor_type.elem_type != wanted:
            cast = f"{PREFIX}{index}_cast"
            graph.node.append(helper.make_node("Cast", [current], [cast], to=wanted))
            current = cast
        if len(spec.shape) == 1 and len(tensor_type.shape.dim) == 2:
            shape, flat = f"{PREFIX}{index}_shape", f"{PREFIX}{index}_flat"
            graph.initializer.append(helper.make_tensor(shape, onnx.TensorProto.INT64, [1], [-1]))
            graph.node.append(helper.make_node("Reshape", [current, shape], [flat]))
            current = flat
        if current != spec.name:
            graph.node.append(helper.make_node("Identity", [current], [spec.name]))
        outputs.append(
            helper.make_tensor_value_info(spec.name, wanted, [None] * max(1, len(spec.shape)))
        )
    del graph.output[:]
    graph.output.extend(outputs)
    if not any(opset.domain in ("", "ai.onnx") for opset in model.opset_import):
        # A graph of ai.onnx.ml nodes only (onnxmltools' XGBoost) imports no default domain.
        model.opset_import.append(helper.make_opsetid("", DEFAULT_OPSET))
    onnx.checker.check_model(model)
    return model


def element_type(onnx: Any, datatype: str) -> int:
    """The ONNX element type of a V2 datatype (BYTES: string)."""
    if datatype == "BYTES":
        return int(onnx.TensorProto.STRING)
    return int(onnx.helper.np_dtype_to_tensor_dtype(numpy_dtype(datatype)))
