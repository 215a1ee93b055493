"""The Runtime protocol every framework implements, and what saving and loading exchange.

A runtime gets its input already validated against the version's signature: for a tabular signature
a 2-D numpy array (or a pandas DataFrame when a column is categorical), otherwise a dict of named
numpy arrays. It returns a dict of named numpy arrays whose first dimension is the batch.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from dockyard.errors import InvalidInput, MissingExtra, PredictionFailed

if TYPE_CHECKING:
    import numpy as np  # annotations only: the workspace imports this module for every command


class Runtime(Protocol):
    """A loaded model that can predict."""

    framework: str
    output_names: tuple[str, ...]
    """Every output this runtime can produce; the first is the main prediction."""
    fork_safe: bool
    """Whether forked workers may share this loaded model (False once it holds a CUDA context)."""

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Predict a batch; return the requested ``outputs`` (a subset of ``output_names``)."""
        ...


@dataclass(frozen=True)
class SavedModel:
    """A model written to disk in its safe format: one file, plus what loading it needs."""

    path: Path
    format: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """What the registry knows about a stored artifact that loading may need."""

    format: str
    options: Mapping[str, Any] = field(default_factory=dict)
    allow_pickle: bool = False
    trusted_types: tuple[str, ...] = ()
    cache_dir: Path | None = None
    """A folder a runtime may unpack into (folder artifacts); keyed by the artifact's digest."""


def import_extra(module: str, framework: str, extra: str) -> ModuleType:
    """Import an optional framework, or raise MissingExtra naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(framework, extra) from exc


@contextlib.contextmanager
def prediction_errors(framework: str) -> Iterator[None]:
    """Translate a framework's exception during predict into PredictionFailed (cause chained)."""
    try:
        yield
    except (InvalidInput, PredictionFailed):
        raise
    except Exception as exc:
        message = f"{framework} model failed to predict: {type(exc).__name__}"
        raise PredictionFailed(message) from exc


def row_count(x: Any) -> int:
    """Rows in a model input: a 2-D array, a DataFrame or a dict of arrays."""
    if isinstance(x, Mapping):
        return len(next(iter(x.values()))) if x else 0
    return len(x)


def select_outputs(available: tuple[str, ...], requested: Sequence[str]) -> tuple[str, ...]:
    """The outputs to compute: all when none are requested; an unknown name is InvalidInput."""
    if not requested:
        return available
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; this model produces {', '.join(available)}"
        )
    return tuple(requested)
