"""Dockyard's own allow-list of the types a skops artifact may name.

The list read from an artifact is never trusted: a skops file can ask the loader to *call* any
type it names (``ConstructorFromReduceNode``), so trusting ``builtins.eval`` or ``numpy.memmap``
would let a crafted file run code or write files. A name is approved when the operator listed it at
registration (``--trusted-type``), when it is on ``TRUSTED_NAMES``, or when it is a *class* defined
in one of ``TRUSTED_PACKAGES`` outside the modules that touch files or build code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import numpy as np

from dockyard.runtimes.classes import in_package

TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")
"""Packages whose classes are data holders a fitted estimator is made of (trees, dtypes, ...)."""

UNTRUSTED_PARTS = frozenset(
    {"io", "testing", "_testing", "f2py", "distutils", "datasets", "_datasource"}
)
"""Module path parts inside the trusted packages whose classes read, write or compile files."""

TRUSTED_NAMES = frozenset(
    {
        # HistGradientBoosting fitted on a DataFrame with categorical columns stores
        # functools.partial(sklearn.utils.validation.check_array, ...) as a preprocessor.
        "functools.partial",
        "sklearn.utils.validation.check_array",
    }
)
"""Non-class names (or names outside the trusted packages) that common sklearn models need."""


def refused_types(names: Iterable[str], operator_trusted: Iterable[str]) -> list[str]:
    """The names in ``names`` neither the operator nor Dockyard's allow-list approves, sorted."""
    approved = set(operator_trusted) | TRUSTED_NAMES
    return sorted({name for name in names if name not in approved and not is_trusted_class(name)})


def is_trusted_class(name: str) -> bool:
    """True when ``name`` is a class of a trusted package, outside its file-touching modules.

    Only a name inside a trusted package is resolved (importing a module of that package); the class
    found must itself be defined there, so a re-exported ``subprocess.Popen`` is refused, and must
    not be a ``numpy.memmap``, which creates a file when called.
    """
    if not _is_trusted_module(name.rpartition(".")[0]):
        return False
    found = _resolve(name.split("."))
    return (
        isinstance(found, type)
        and _is_trusted_module(found.__module__)
        and not issubclass(found, np.memmap)
    )


def _is_trusted_module(module: str) -> bool:
    return any(in_package(module, pkg) for pkg in TRUSTED_PACKAGES) and not (
        UNTRUSTED_PARTS.intersection(module.split("."))
    )


def _resolve(parts: list[str]) -> object:
    """The object a dotted name names (longest importable module, then attributes), or None."""
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
            if found is None:
                return None
        return found
    return None
