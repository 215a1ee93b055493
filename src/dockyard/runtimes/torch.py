"""PyTorch modules, stored as TorchScript and run under ``torch.inference_mode`` on the GPU if any.

TorchScript is one self-contained file that loads without unpickling arbitrary objects. torch marks
``torch.jit`` deprecated in favour of ``torch.export``; Dockyard chose TorchScript on purpose, so
that deprecation warning is silenced around the few calls that save and load, and nowhere else.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput, PredictionFailed
from dockyard.runtimes.base import (
    LoadOptions,
    SavedModel,
    import_extra,
    prediction_errors,
    select_outputs,
)
from dockyard.runtimes.classes import has_base, qualified_name
from dockyard.runtimes.formats import check_format, check_suffix, copy_model_file, model_file_errors

FRAMEWORK = "torch"
EXTRA = "torch"
tabular = False
FORMAT = "torchscript"
SUFFIXES = (".pt", ".pth", ".torchscript")
DEFAULT_INPUT_NAMES = ("input-0",)
DEFAULT_OUTPUT_NAMES = ("output-0",)
DEFAULT_FLOAT_DTYPE = "float32"
TORCHSCRIPT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"
MAX_INFLATED_BYTES = 64 * 2**20
"""The most a TorchScript file's compressed members (code, small records) may inflate to."""


def is_model(obj: object) -> bool:
    """True for a ``torch.nn.Module``, TorchScript modules included."""
    return has_base(obj, "torch", ("Module",))


def save(
    obj: Any,
    folder: Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    example_input: Any = None,
) -> SavedModel:
    """Write the module as TorchScript ``model.pt``, or take in a TorchScript file.

    An ``nn.Module`` is compiled with ``torch.jit.script``; when that fails it is traced with
    ``example_input`` (an array, a tuple of arrays, or a dict keyed by input name), which is then
    required. With ``example_input`` and no ``output_names``, the saved model is run once to name
    its outputs (``output-0``, ``output-1``, ... or a returned dict's keys). Options record the
    input and output names and the module's float dtype, which floating inputs are cast to.
    """
    torch = import_extra("torch", FRAMEWORK, EXTRA)
    names = tuple(input_names or DEFAULT_INPUT_NAMES)
    target = folder / "model.pt"
    with _torchscript():
        if isinstance(obj, Path):
            check_suffix(FRAMEWORK, obj, SUFFIXES)
            copy_model_file(obj, folder, target.name)
        elif is_model(obj):
            scripted = _compile(torch, obj, names, example_input)
            with model_file_errors(FRAMEWORK, "saving the module as TorchScript"):
                torch.jit.save(scripted, str(target))
        else:
            raise InvalidInput(
                f"{qualified_name(obj)} is not a torch.nn.Module or a TorchScript file"
            )
        saved = _load_module(torch, target, "cpu")
    float_dtype = _float_dtype(saved)
    if output_names is None and example_input is not None:
        runtime = TorchRuntime(torch, saved, names, DEFAULT_OUTPUT_NAMES, "cpu", float_dtype)
        output_names = runtime.discover_output_names(example_input)
    options = {
        "input_names": list(names),
        "output_names": list(output_names or DEFAULT_OUTPUT_NAMES),
        "float_dtype": float_dtype,
    }
    return SavedModel(target, FORMAT, options)


def load(path: Path, opts: LoadOptions) -> TorchRuntime:
    """Load onto ``cuda`` when torch sees a GPU, else the CPU, in eval mode."""
    check_format(FRAMEWORK, opts, FORMAT)
    torch = import_extra("torch", FRAMEWORK, EXTRA)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with _torchscript():
        module = _load_module(torch, path, device)
    return TorchRuntime(
        torch,
        module,
        tuple(opts.options.get("input_names") or DEFAULT_INPUT_NAMES),
        tuple(opts.options.get("output_names") or DEFAULT_OUTPUT_NAMES),
        device,
        str(opts.options.get("float_dtype") or DEFAULT_FLOAT_DTYPE),
    )


class TorchRuntime:
    """A TorchScript module; inputs are passed positionally in ``input_names`` order."""

    framework = FRAMEWORK

    def __init__(
        self,
        torch: Any,
        module: Any,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        device: str,
        float_dtype: str,
    ) -> None:
        self._torch = torch
        self.module = module
        self.input_names = input_names
        self.output_names = output_names
        self.device = device
        self.fork_safe = device == "cpu"
        self._float_dtype = getattr(torch, float_dtype, None)
        if not isinstance(self._float_dtype, torch.dtype):
            raise InvalidInput(f"unknown float_dtype {float_dtype!r} in the artifact options")

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs)
        tensors = self._tensors(x)
        with prediction_errors(FRAMEWORK), self._torch.inference_mode():
            named = self._named(self.module(*tensors), self.output_names)
            return {name: named[name].detach().cpu().numpy() for name in selected}

    def discover_output_names(self, x: Any) -> tuple[str, ...]:
        """Run the model once on ``x`` and name what it returns."""
        tensors = self._tensors(x)
        with model_file_errors(FRAMEWORK, "running the model on example_input"):
            with self._torch.inference_mode():
                result = self.module(*tensors)
            if isinstance(result, Mapping):
                return tuple(str(key) for key in result)
            count = len(result) if isinstance(result, tuple | list) else 1
            return tuple(f"output-{i}" for i in range(count))

    def _tensors(self, x: Any) -> tuple[Any, ...]:
        """The inputs as tensors on the device: a dict by name, a tuple in order, or one array."""
        if isinstance(x, Mapping):
            missing = [name for name in self.input_names if name not in x]
            if missing:
                raise InvalidInput(
                    f"missing input {missing[0]!r}; this model takes {', '.join(self.input_names)}"
                )
            values = [x[name] for name in self.input_names]
        else:
            values = list(x) if isinstance(x, tuple | list) else [x]
        if len(values) != len(self.input_names):
            raise InvalidInput(
                f"this model takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}); got {len(values)}"
            )
        return tuple(
            self._tensor(name, v) for name, v in zip(self.input_names, values, strict=True)
        )

    def _tensor(self, name: str, value: Any) -> Any:
        array = np.asarray(value)
        if array.dtype.kind in "OUSV":
            raise InvalidInput(f"input {name!r} must be numeric; got {array.dtype}")
        # torch.from_numpy shares memory and warns on a read-only array (e.g. a decoded request).
        array = (
            np.array(array, copy=True) if not array.flags.writeable else np.ascontiguousarray(array)
        )
        tensor = self._torch.from_numpy(array)
        if tensor.is_floating_point() and tensor.dtype != self._float_dtype:
            tensor = tensor.to(self._float_dtype)
        return tensor.to(self.device)

    @staticmethod
    def _named(result: Any, names: tuple[str, ...]) -> dict[str, Any]:
        if isinstance(result, Mapping):
            missing = [name for name in names if name not in result]
            if missing:
                raise PredictionFailed(f"the model returned no output {missing[0]!r}")
            return dict(result)
        values = list(result) if isinstance(result, tuple | list) else [result]
        if len(values) != len(names):
            raise PredictionFailed(
                f"the model returned {len(values)} outputs but was registered with "
                f"{len(names)} output names ({', '.join(names)})"
            )
        return dict(zip(names, values, strict=True))


def _compile(torch: Any, module: Any, names: tuple[str, ...], example_input: Any) -> Any:
    """Script the module; if it cannot be scripted, trace it (in eval mode) with example_input."""
    if has_base(module, "torch.jit", ("ScriptModule",)):
        return module
    try:
        return torch.jit.script(module)
    except Exception as exc:
        if example_input is None:
            raise InvalidInput(
                f"{type(module).__name__} cannot be compiled with torch.jit.script "
                f"({type(exc).__name__}); pass example_input so it can be traced instead"
            ) from exc
    tracer = TorchRuntime(torch, module, names, DEFAULT_OUTPUT_NAMES, "cpu", _float_dtype(module))
    example = tracer._tensors(example_input)
    was_training = module.training
    module.eval()
    try:
        with model_file_errors(FRAMEWORK, f"tracing {type(module).__name__}"):
            return torch.jit.trace(module, example)
    finally:
        module.train(was_training)


def _check_inflated(path: Path) -> None:
    """Refuse a TorchScript zip whose compressed members would inflate past MAX_INFLATED_BYTES,
    before torch inflates them.

    ``torch.jit.save`` stores tensors as they are and deflates only the code and small records,
    but ``torch.jit.load`` inflates any deflated member to its declared size: a few megabytes of
    file could claim gigabytes. Stored members inflate to nothing more than the file holds.
    """
    if not zipfile.is_zipfile(path):
        return  # torch names what is wrong with it
    with zipfile.ZipFile(path) as archive:
        inflated = sum(
            info.file_size
            for info in archive.infolist()
            if info.compress_type != zipfile.ZIP_STORED
        )
    if inflated > MAX_INFLATED_BYTES:
        raise InvalidInput(
            f"{path.name}: its compressed members inflate to {inflated:,} bytes, more than the "
            f"{MAX_INFLATED_BYTES:,} Dockyard allows (MAX_INFLATED_BYTES; torch.jit.save "
            "compresses only code and small records)"
        )


def _load_module(torch: Any, path: Path, device: str) -> Any:
    what = (
        f"loading {path.name} as TorchScript (a torch.save pickle is refused; use torch.jit.save)"
    )
    _check_inflated(path)
    with model_file_errors(FRAMEWORK, what):
        module = torch.jit.load(str(path), map_location=device)
    module.eval()
    return module


def _float_dtype(module: Any) -> str:
    """The dtype of the module's first floating parameter or buffer, e.g. ``float32``."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), None)
    return DEFAULT_FLOAT_DTYPE if dtype is None else str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def _torchscript() -> Iterator[None]:
    """Silence torch's deprecation of ``torch.jit`` (only that) around saving and loading."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=TORCHSCRIPT_DEPRECATION, category=DeprecationWarning
        )
        yield
