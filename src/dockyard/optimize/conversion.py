"""What every converter shares: the version it converts, what it hands back, and the one place
a converter library's exception becomes a refusal."""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard.errors import DockyardError, MissingExtra, OptimizationRefused
from dockyard.registry.records import Signature

DETAIL_LIMIT = 300
"""Characters of a converter's own message kept in the refusal (some print whole node dumps)."""
EXTRA = "optimize"


@dataclass(frozen=True)
class Source:
    """The version being converted, as a converter sees it: its framework, the model object its
    runtime holds (an estimator, a booster, a module), the signature its answers must keep and its
    artifact's options (a LightGBM classifier's classes)."""

    framework: str
    model: Any
    signature: Signature
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Converted:
    """A conversion's artifact, not yet stored: bytes in ``framework``'s safe ``format``, the
    options its runtime loads with, and who made it."""

    framework: str
    format: str
    filename: str
    payload: bytes
    options: Mapping[str, Any]
    converter: str
    converter_version: str


class Converter(Protocol):
    """Converts a version to one target runtime, or refuses with the reason."""

    name: str
    """The converting package, as the lineage records it (``skl2onnx``, ``treelite``)."""
    target: str
    """The runtime it produces for (``onnx``, ``treelite``, ``native``)."""
    frameworks: tuple[str, ...]
    """The frameworks whose versions it takes (it may still refuse one of their models)."""

    def convert(self, source: Source) -> Converted:
        """The converted model; OptimizationRefused naming why it cannot be."""
        ...


def package_version(name: str) -> str:
    """The installed version of a converter package, or MissingExtra naming the extra."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtra(name, EXTRA) from None


@contextlib.contextmanager
def converter_errors(converter: str) -> Iterator[None]:
    """Translate a converter library's failure into OptimizationRefused with its first line."""
    try:
        yield
    except DockyardError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0][:DETAIL_LIMIT] if text else ""
        suffix = f": {detail}" if detail else ""
        raise OptimizationRefused(
            f"{converter} could not convert it ({type(exc).__name__}{suffix})"
        ) from exc


def refuse_categorical(converter: str, signature: Signature) -> None:
    """Converters here take one numeric table: a categorical column cannot go in."""
    categorical = [spec.name for spec in signature.inputs if spec.categorical]
    if categorical:
        raise OptimizationRefused(
            f"{converter} takes numeric inputs only; {categorical[0]!r} is categorical"
        )
    if not signature.tabular:
        raise OptimizationRefused(f"{converter} takes a table; this model takes named tensors")
