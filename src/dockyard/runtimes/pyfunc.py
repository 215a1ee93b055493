"""Plain Python functions: a folder of code (or one module file) packed as a tar, called with x.

Every load unpacks the very bytes it hashed into a new private folder, so what runs is what was
registered: code edited in an earlier load's folder is never imported again. The function is
imported from there by file location under a name unique to the artifact, so two versions whose
code shares module names never see each other's modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput, PredictionFailed
from dockyard.runtimes.base import LoadOptions, SavedModel, prediction_errors, select_outputs
from dockyard.runtimes.classes import qualified_name
from dockyard.runtimes.formats import check_format, model_file_errors
from dockyard.runtimes.tarballs import pack_folder, unpack

FRAMEWORK = "pyfunc"
EXTRA = ""
tabular = False
"""Only the default: whether a function takes a table is decided per model and kept in options."""
FORMAT = "pyfunc-tar"
DEFAULT_OUTPUT_NAMES = ("predict",)
ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
"""``module:function``; the module is a dotted path to a ``.py`` file inside the folder."""


def is_model(obj: object) -> bool:
    """True for a plain Python function (``def``); ``detect`` tries every other framework first."""
    return inspect.isfunction(obj)


def save(
    obj: Any,
    folder: Path,
    *,
    entrypoint: str | None = None,
    tabular: bool = False,
    output_names: Sequence[str] | None = None,
) -> SavedModel:
    """Pack a folder of code (``entrypoint`` required) or a function's module file as ``model.tar``.

    A function must be defined with ``def`` at the top level of a module file; only that one file
    is packed, as ``<module stem>.py``. To ship sibling modules too, pass the folder instead.
    """
    target = folder / "model.tar"
    if isinstance(obj, Path):
        if not obj.is_dir():
            raise InvalidInput(
                f"{obj} is not a folder; a Python-function model is a folder of code"
            )
        if entrypoint is None:
            raise InvalidInput(
                f"{obj} needs an entrypoint naming the function to call: "
                "entrypoint='module:function' (--entrypoint module:function)"
            )
        _module_file(obj, _split_entrypoint(entrypoint)[0])
        pack_folder(obj, target)
    elif inspect.isfunction(obj):
        source, entrypoint = _function_source(obj)
        with tempfile.TemporaryDirectory(prefix="dockyard-pyfunc-") as tmp:
            shutil.copyfile(source, Path(tmp) / f"{entrypoint.partition(':')[0]}.py")
            pack_folder(Path(tmp), target)
    else:
        raise InvalidInput(
            f"{qualified_name(obj)} is not a Python function or a folder of code; "
            "pass a function defined with def in a module file"
        )
    options = {
        "entrypoint": entrypoint,
        "tabular": bool(tabular),
        "output_names": list(output_names or ()),
    }
    return SavedModel(target, FORMAT, options)


def load(path: Path, opts: LoadOptions) -> PyfuncRuntime:
    """Unpack the archive into a new private folder and import the entrypoint's function.

    The folder (under ``opts.cache_dir``, else the system's temporary folder) is named after this
    process and the archive's sha256 (``<pid>-pyfunc-<digest>-…``: in the home's staging folder, the
    next start removes it should this process be killed) and removed when the runtime is, by the
    process that created it; the function may read files beside its module while it serves.
    """
    check_format(FRAMEWORK, opts, FORMAT)
    module_name, function_name = _split_entrypoint(str(opts.options.get("entrypoint", "")))
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    parent = opts.cache_dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-pyfunc-{digest[:16]}-", dir=parent))
    try:
        unpack(data, folder, path.name)
        module = _import(
            folder, module_name, f"dockyard_pyfunc_{digest[:16]}_{module_name.replace('.', '_')}"
        )
        function = getattr(module, function_name, None)
        if not callable(function):
            raise InvalidInput(f"{module_name} has no function {function_name!r}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    runtime = PyfuncRuntime(
        function,
        tuple(opts.options.get("output_names") or ()),
        bool(opts.options.get("tabular", False)),
    )
    weakref.finalize(runtime, _remove_folder, folder, os.getpid())
    return runtime


def _remove_folder(folder: Path, owner_pid: int) -> None:
    """Remove a runtime's code folder, in the process that unpacked it only: forked workers share
    the runtime and the folder, and the first of them to exit must not pull it from the others."""
    if os.getpid() == owner_pid:
        shutil.rmtree(folder, ignore_errors=True)


class PyfuncRuntime:
    """A function of ``x`` returning an array, a list, or a dict of arrays keyed by output name."""

    framework = FRAMEWORK
    fork_safe = True

    def __init__(
        self, function: Callable[[Any], Any], output_names: tuple[str, ...], tabular: bool
    ) -> None:
        self.function = function
        self.output_names = output_names
        self.tabular = tabular

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        selected = select_outputs(self.output_names, outputs) if self.output_names else ()
        with prediction_errors(FRAMEWORK):
            result = self.function(x)
            named = (
                {str(k): np.asarray(v) for k, v in result.items()}
                if isinstance(result, Mapping)
                else {DEFAULT_OUTPUT_NAMES[0]: np.asarray(result)}
            )
        selected = selected or tuple(outputs) or tuple(named)
        missing = [name for name in selected if name not in named]
        if missing:
            raise PredictionFailed(
                f"the function returned no output {missing[0]!r} (it returned {', '.join(named)})"
            )
        return {name: named[name] for name in selected}


def _split_entrypoint(entrypoint: str) -> tuple[str, str]:
    if not ENTRYPOINT.fullmatch(entrypoint):
        raise InvalidInput(f"entrypoint {entrypoint!r} is not of the form 'module:function'")
    module, _, function = entrypoint.partition(":")
    return module, function


def _module_file(folder: Path, module: str) -> Path:
    base = folder.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise InvalidInput(f"module {module!r} not found in {folder}: no {base.name}.py there")


def _function_source(function: Any) -> tuple[Path, str]:
    """The module file defining ``function``, and its entrypoint; refuse what cannot be imported."""
    name = function.__qualname__
    if function.__name__ == "<lambda>":
        raise InvalidInput(
            "a lambda cannot be saved; define the function with def in a module file"
        )
    if name != function.__name__ or function.__closure__:
        raise InvalidInput(
            f"{name} is a nested function or closure; define it at the top level of a module file"
        )
    if function.__module__ == "__main__":
        raise InvalidInput(
            f"{name} is defined in __main__ (a script or interactive session); "
            "move it into a module file and import it from there"
        )
    source = inspect.getsourcefile(function)
    if source is None or not Path(source).is_file():
        raise InvalidInput(f"{name} has no source file on disk; define it in a module file")
    stem = Path(source).stem
    if stem == "__init__":
        stem = function.__module__.rpartition(".")[2]
    return Path(source), f"{stem}:{function.__name__}"


def _import(folder: Path, module_name: str, unique_name: str) -> ModuleType:
    """Import ``module_name`` from ``folder`` as ``unique_name``.

    The folder is on ``sys.path`` only while the module runs, so its sibling imports resolve; the
    siblings are then dropped from ``sys.modules`` (the function keeps its own references), which
    means a function must not import sibling modules lazily, at call time.
    """
    file = _module_file(folder, module_name)
    spec = importlib.util.spec_from_file_location(unique_name, file)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot import {file.name} from the model's code")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.modules[unique_name] = module
    sys.path.insert(0, str(folder))
    try:
        with model_file_errors(FRAMEWORK, f"importing {module_name} from the model's code"):
            spec.loader.exec_module(module)
    except InvalidInput:
        sys.modules.pop(unique_name, None)
        raise
    finally:
        sys.path.remove(str(folder))
        _forget_modules_in(folder, set(sys.modules) - before - {unique_name})
    return module


def _forget_modules_in(folder: Path, names: set[str]) -> None:
    resolved = folder.resolve()
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file is not None and Path(file).resolve().is_relative_to(resolved):
            del sys.modules[name]
