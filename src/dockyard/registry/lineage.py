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
from collections.abc import Callable, Mapping, Sequence
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
    "treelite",
    "pandas",
    "dockyard",
)
# The name a lone array gets in the schema when nothing names it (a DataFrame, a mapping of
# tensors or the ``names`` given to ``capture_lineage`` name what they hold).
ARRAY_NAME = "input"
SEPARATOR = b"\x00"


def capture_lineage(
    reference_data: object | None,
    cwd: Path | None = None,
    names: Sequence[str] | None = None,
    parent: str | None = None,
) -> Lineage:
    """Describe where a version comes from.

    ``reference_data``: a NumPy array (or anything ``numpy.asarray`` takes), a pandas DataFrame, a
    mapping of tensor name to array, or None. ``cwd``: the folder whose git commit is recorded
    (default: the current one); the commit is None outside a repository or without git, and ends in
    "-dirty" when ``git status --porcelain`` shows changes. ``names``: what an array's columns are
    called (see ``fingerprint``). ``parent``: the version this one was retrained from.
    """
    data_sha256: str | None = None
    rows: int | None = None
    schema: dict[str, str] = {}
    if reference_data is not None:
        data_sha256, rows, schema = fingerprint(reference_data, names)
    return Lineage(
        data_sha256=data_sha256,
        data_rows=rows,
        data_schema=schema,
        git_commit=git_commit(Path.cwd() if cwd is None else cwd),
        python_version=platform.python_version(),
        packages=package_versions(),
        parent=parent,
    )


def fingerprint(
    data: object, names: Sequence[str] | None = None
) -> tuple[str, int | None, dict[str, str]]:
    """(sha256 hex digest, row count, {column or tensor name: dtype}) of reference data.

    A DataFrame's schema names its columns and a mapping's its tensors. An array is one entry,
    ``input``, unless ``names`` says what it holds: one name per column of a 2-D array (a table's
    feature names, e.g. a CSV file's header), or one name for the whole array (a model's one named
    input). Names go into the schema only: the digest is the data's, whatever it is called.
    """
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
        schema = _array_schema(array, names)
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


FRAMEWORK_PACKAGES = {
    "sklearn": ("scikit-learn", "skops", "numpy"),
    "xgboost": ("xgboost", "numpy"),
    "lightgbm": ("lightgbm", "numpy"),
    "onnx": ("onnxruntime", "numpy"),
    "torch": ("torch", "numpy"),
    "treelite": ("treelite", "numpy"),
}
"""The packages whose version decides whether a framework's model loads and predicts as it did;
a Python function may use any tracked package."""


def version_skew(
    framework: str, recorded: Mapping[str, str], installed: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(package, version at registration, version installed now) for each package that
    ``framework``'s models load with and whose installed version differs from the recorded one
    (scikit-learn, for one, does not promise that a model predicts the same across versions)."""
    installed = package_versions() if installed is None else installed
    names = FRAMEWORK_PACKAGES.get(framework, tuple(p for p in TRACKED_PACKAGES if p != "dockyard"))
    return [
        (name, recorded[name], installed.get(name, "not installed"))
        for name in names
        if name in recorded and installed.get(name) != recorded[name]
    ]


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


def _array_schema(array: np.ndarray[Any, Any], names: Sequence[str] | None) -> dict[str, str]:
    """{name: dtype} of an array: each named column of a 2-D one, else the array as a whole."""
    dtype = str(array.dtype)
    if names is None:
        return {ARRAY_NAME: dtype}
    labels = [str(name) for name in names]
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"reference data column names must differ; got {labels}")
    columns = array.shape[1] if array.ndim == 2 else None
    if len(labels) != columns and len(labels) != 1:
        raise InvalidInput(
            f"{len(labels)} names for reference data of shape {list(array.shape)}: give one name "
            "per column of a 2-D array, or one name for the whole array"
        )
    # A NumPy array has one dtype: every column has it.
    return dict.fromkeys(labels, dtype)


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
