"""What every framework's ``save`` and ``load`` share: taking in a user's model file, checking a
stored format, and turning a framework's complaint about a file into one InvalidInput."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from dockyard.errors import DockyardError, InvalidInput
from dockyard.runtimes.base import LoadOptions

DETAIL_LIMIT = 300
"""Characters of a framework's own error message kept in ours (they can be whole tracebacks)."""


def check_format(framework: str, opts: LoadOptions, *formats: str) -> None:
    """Refuse an artifact whose stored format this framework's ``load`` does not read."""
    if opts.format not in formats:
        raise InvalidInput(
            f"{framework} cannot load an artifact of format {opts.format!r}; "
            f"expected {' or '.join(repr(name) for name in formats)}"
        )


def check_suffix(framework: str, path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse a model file that is missing or whose suffix this framework does not take."""
    if not path.is_file():
        raise InvalidInput(f"model file {path} does not exist or is not a file")
    if path.suffix.lower() not in suffixes:
        raise InvalidInput(
            f"{framework} takes model files ending {', '.join(suffixes)}; got {path.name}"
        )


def copy_model_file(source: Path, folder: Path, name: str) -> Path:
    """Copy a user's model file into ``folder`` as ``name`` and return the copy's path."""
    target = folder / name
    shutil.copyfile(source, target)
    return target


@contextlib.contextmanager
def model_file_errors(framework: str, what: str) -> Iterator[None]:
    """Translate a framework's error while reading or writing ``what`` into InvalidInput.

    Dockyard's own errors pass through unchanged; the cause stays chained for the log.
    """
    try:
        yield
    except DockyardError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:DETAIL_LIMIT] if str(exc).strip() else ""
        suffix = f": {detail}" if detail else ""
        raise InvalidInput(
            f"{framework} could not handle {what} ({type(exc).__name__}{suffix})"
        ) from exc
