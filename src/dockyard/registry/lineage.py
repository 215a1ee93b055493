"""Lineage of a version: a fingerprint of its reference data, the git commit and the environment.

The fingerprint is a sha256 over a canonical encoding, so equal data gives the same digest on any
machine: dtype, shape and C-order bytes of each array; object values by their ``str``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput
from dockyard.registry.records import Lineage

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 5.0
TRACKED_PACKAGES = (
    "numpy",
    "scikit-learn",
    "skops",
    "onnxruntime",
    "onnx",
    "xgboost",
    "lightgbm",
    "torch",
    "pandas",
    "dockyard",
)
# The name a lone array gets in the schema (a table or named tensors give their own names).
ARRAY_NAME = "input"
SEPARATOR = b"\x00"


def capture_lineage(reference_data: object | None, cwd: Path | None = None) -> Lineage:
    """Describe where a version comes from.

    ``reference_data``: a NumPy array (or anything ``numpy.asarray`` takes), a pandas DataFrame, a
    mapping of tensor name to array, or None. ``cwd``: the folder whose git commit is recorded
    (default: the current one); the commit is None outside a repository or without git, and ends in
    "-dirty" when ``git status --porcelain`` shows changes.
    """
    data_sha256: str | None = None
    rows: int | None = None
    schema: dict[str, str] = {}
    if reference_data is not None:
        data_sha256, rows, schema = fingerprint(reference_data)
    return Lineage(
        data_sha256=data_sha256,
        data_rows=rows,
        data_schema=schema,
        git_commit=git_commit(Path.cwd() if cwd is None else cwd),
        python_version=platform.python_version(),
        packages=package_versions(),
    )


def fingerprint(data: object) -> tuple[str, int | None, dict[str, str]]:
    """(sha256 hex digest, row count, {column or tensor name: dtype}) of reference data."""
    hasher = hashlib.sha256()
    rows: int | None
    schema: dict[str, str]
    if _is_dataframe(data):
        frame: Any = data
        hasher.update(b"dataframe")
        rows = len(frame)
        schema = {}
        # The index is left out: reference rows matter, not how they happen to be labelled.
        for name, column in frame.items():
            schema[str(name)] = str(column.dtype)
            _update(hasher.update, str(name), column.to_numpy())
    elif isinstance(data, Mapping):
        hasher.update(b"mapping")
        arrays = {str(key): _as_array(value) for key, value in data.items()}
        names = sorted(arrays)
        for name in names:
            _update(hasher.update, name, arrays[name])
        rows = _rows(arrays[names[0]]) if names else None
        schema = {name: str(arrays[name].dtype) for name in names}
    else:
        array = _as_array(data)
        hasher.update(b"array")
        _update(hasher.update, ARRAY_NAME, array)
        rows = _rows(array)
        schema = {ARRAY_NAME: str(array.dtype)}
    return hasher.hexdigest(), rows, schema


def git_commit(cwd: Path) -> str | None:
    """HEAD's commit in ``cwd`` (plus "-dirty" if there are changes), or None if there is none."""
    head = _git(cwd, "rev-parse", "HEAD")
    if head is None or not head.strip():
        return None
    status = _git(cwd, "status", "--porcelain")
    return head.strip() + ("-dirty" if status and status.strip() else "")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape how a model loads and predicts."""
    found: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _is_dataframe(data: object) -> bool:
    # pandas is optional and heavy: if it was never imported, ``data`` cannot be a DataFrame.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(data, pandas.DataFrame)


def _as_array(value: object) -> np.ndarray[Any, Any]:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"cannot fingerprint reference data of type {type(value).__name__}: {exc}; "
            "pass a NumPy array, a pandas DataFrame or a mapping of name to array"
        ) from exc


def _rows(array: np.ndarray[Any, Any]) -> int | None:
    return int(array.shape[0]) if array.ndim else None


def _update(feed: Callable[[bytes], None], name: str, array: np.ndarray[Any, Any]) -> None:
    """Feed one named array into the hash: name, dtype, shape, then its values."""
    header = f"{name}|{array.dtype.str}|{array.shape}".encode()
    feed(len(header).to_bytes(8, "little") + header)
    if array.dtype.hasobject:
        # Object arrays hold pointers; hash each value's text, length-prefixed to stay unambiguous.
        for value in array.ravel(order="C"):
            text = str(value).encode("utf-8", "surrogatepass")
            feed(len(text).to_bytes(8, "little") + text)
    else:
        feed(np.ascontiguousarray(array).tobytes())
    feed(SEPARATOR)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git %s in %s failed: %s", " ".join(args), cwd, exc)
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout
