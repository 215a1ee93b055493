"""ONNX graphs, run by onnxruntime on the GPU when one is there, else on the CPU.

The model takes named tensors; each input is cast to the element type the graph declares, so a
JSON request decoded as FP64 can feed a ``tensor(float)`` input.
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
from dockyard.runtimes.formats import check_format, check_suffix, copy_model_file, model_file_errors

FRAMEWORK = "onnx"
EXTRA = "onnx"
tabular = False
FORMAT = "onnx"
SUFFIXES = (".onnx",)
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
"""Preferred first; only those onnxruntime reports as available are asked for."""

ONNX_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}
"""Element types onnxruntime declares and the numpy dtype an input is cast to; others pass as is."""


def is_model(obj: object) -> bool:
    """True for an ``onnx.ModelProto``."""
    return has_base(obj, "onnx", ("ModelProto",))


def save(obj: Any, folder: Path) -> SavedModel:
    """Write a ModelProto, or copy a ``.onnx`` file, as ``model.onnx``.

    Graphs that keep their weights in external data files are not one file and are not supported.
    """
    target = folder / "model.onnx"
    if isinstance(obj, Path):
        check_suffix(FRAMEWORK, obj, SUFFIXES)
        copy_model_file(obj, folder, target.name)
    elif is_model(obj):
        with model_file_errors(FRAMEWORK, "serialising the ModelProto"):
            target.write_bytes(obj.SerializeToString())
    else:
        raise InvalidInput(f"{qualified_name(obj)} is not an onnx.ModelProto or a .onnx file")
    return SavedModel(target, FORMAT, {})


def load(path: Path, opts: LoadOptions) -> OnnxRuntime:
    """Open an InferenceSession on the best available provider."""
    check_format(FRAMEWORK, opts, FORMAT)
    ort = import_extra("onnxruntime", FRAMEWORK, EXTRA)
    available = set(ort.get_available_providers())
    providers = [name for name in PROVIDERS if name in available]
    with model_file_errors(FRAMEWORK, f"loading {path.name}"):
        session = ort.InferenceSession(str(path), providers=providers)
    return OnnxRuntime(session)


class OnnxRuntime:
    """An onnxruntime session: named tensors in, the graph's outputs out."""

    framework = FRAMEWORK

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs = session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(item.name for item in inputs)
        self.input_dtypes: dict[str, np.dtype[Any] | None] = {
            item.name: ONNX_TO_NUMPY.get(item.type) for item in inputs
        }
        self.output_names: tuple[str, ...] = tuple(item.name for item in session.get_outputs())
        self.fork_safe = session.get_providers() == ["CPUExecutionProvider"]

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        feeds = self._feeds(x)
        with prediction_errors(FRAMEWORK):
            values = self.session.run(list(selected), feeds)
        return {name: _as_array(value) for name, value in zip(selected, values, strict=True)}

    def _feeds(self, x: Any) -> dict[str, np.ndarray]:
        """Each declared input, cast; a bare array feeds a graph with exactly one input."""
        if not isinstance(x, Mapping):
            if len(self.input_names) != 1:
                raise InvalidInput(
                    f"this model takes the inputs {', '.join(self.input_names)}; send them by name"
                )
            x = {self.input_names[0]: x}
        unknown = sorted(set(x) - set(self.input_names))
        if unknown:
            raise InvalidInput(
                f"unknown input {unknown[0]!r}; this model takes {', '.join(self.input_names)}"
            )
        return {name: self._cast(name, x) for name in self.input_names}

    def _cast(self, name: str, x: Mapping[str, Any]) -> np.ndarray:
        if name not in x:
            raise InvalidInput(
                f"missing input {name!r}; this model takes {', '.join(self.input_names)}"
            )
        value = np.asarray(x[name])
        dtype = self.input_dtypes[name]
        if dtype is None or value.dtype == dtype:
            return value
        try:
            return value.astype(dtype)
        except (TypeError, ValueError) as exc:
            # The conversion's own message quotes the value: the answer names only the input.
            raise InvalidInput(
                f"input {name!r} holds a value that cannot be converted to {dtype}"
            ) from exc


def _as_array(value: Any) -> np.ndarray:
    """An output as an array; a sequence of maps (skl2onnx's ZipMap) becomes one row per map."""
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return np.array([list(row.values()) for row in value])
    return np.asarray(value)
