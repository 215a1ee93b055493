"""Which framework a model belongs to, and the one place that maps framework names to modules.

Every framework module exposes the same surface: ``FRAMEWORK``, ``EXTRA``, ``tabular``,
``is_model(obj)``, ``save(obj, folder, **kwargs)`` and ``load(path, opts)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from dockyard.errors import InvalidInput
from dockyard.runtimes.base import LoadOptions, Runtime
from dockyard.runtimes.classes import qualified_name

FRAMEWORK_MODULES: dict[str, str] = {
    "xgboost": "dockyard.runtimes.xgboost",
    "lightgbm": "dockyard.runtimes.lightgbm",
    "onnx": "dockyard.runtimes.onnx",
    "treelite": "dockyard.runtimes.treelite",
    "torch": "dockyard.runtimes.torch",
    "sklearn": "dockyard.runtimes.sklearn",
    "pyfunc": "dockyard.runtimes.pyfunc",
}
"""In detection order: xgboost and lightgbm estimators are sklearn estimators too, and a torch
module is callable, so the specific frameworks are asked before sklearn and pyfunc."""

SUFFIX_FRAMEWORKS: dict[str, str] = {
    ".skops": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".joblib": "sklearn",
    ".onnx": "onnx",
    ".ubj": "xgboost",
    ".json": "xgboost",
    ".txt": "lightgbm",
    ".pt": "torch",
    ".pth": "torch",
    ".torchscript": "torch",
}


def framework_module(name: str) -> ModuleType:
    """The runtime module of framework ``name``; InvalidInput listing the known ones otherwise."""
    try:
        module_path = FRAMEWORK_MODULES[name]
    except KeyError:
        known = ", ".join(sorted(FRAMEWORK_MODULES))
        raise InvalidInput(f"unknown framework {name!r}; expected one of {known}") from None
    return importlib.import_module(module_path)


def detect_framework(obj: object) -> str:
    """The framework of an in-memory model, or of a saved model's path (by suffix; folder: pyfunc).

    No framework is imported to answer. Ambiguous cases pick one: a ``.json`` file is read as
    XGBoost and a ``.txt`` file as LightGBM; pass ``framework=`` to say otherwise.
    """
    if isinstance(obj, str | Path):
        return _detect_path(Path(obj))
    for name in FRAMEWORK_MODULES:
        if framework_module(name).is_model(obj):
            return name
    if callable(obj):
        return "pyfunc"
    raise InvalidInput(
        f"cannot tell which framework a {qualified_name(obj)} belongs to; "
        f"pass framework=... (one of {', '.join(sorted(FRAMEWORK_MODULES))})"
    )


def load_runtime(framework: str, path: Path, opts: LoadOptions) -> Runtime:
    """Load a stored artifact with its framework's runtime."""
    runtime: Runtime = framework_module(framework).load(path, opts)
    return runtime


def _detect_path(path: Path) -> str:
    if not path.exists():
        raise InvalidInput(f"model path {path} does not exist")
    if path.is_dir():
        return "pyfunc"
    try:
        return SUFFIX_FRAMEWORKS[path.suffix.lower()]
    except KeyError:
        raise InvalidInput(
            f"cannot tell the framework of {path.name} from its suffix; pass framework=... "
            f"(one of {', '.join(sorted(FRAMEWORK_MODULES))})"
        ) from None
