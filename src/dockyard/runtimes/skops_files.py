"""Reading a skops file within bounds, and naming every type it asks the loader for.

A skops file is a zip: ``schema.json`` describes the object tree, and ``.npy``/``.npz``/``.bin``
members hold arrays. Every size is checked from the zip's directory before anything is inflated —
the schema, each member, the ``.npz`` archives inside it, and each member once per node that reads
it. Python's zipfile never returns more than a member's declared size (past it, the CRC check
fails), so the declared sizes bound what loading inflates.
"""

from __future__ import annotations

import importlib
import importlib.abc
import io
import json
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

from dockyard.errors import InvalidInput

SCHEMA = "schema.json"
MAX_SCHEMA_BYTES = 64 * 2**20
"""The most ``schema.json`` may inflate to: it names types and holds small values (arrays are
members of their own); a forest of a thousand trees needs a few megabytes."""
MAX_MODEL_BYTES = 4 * 2**30
"""The most loading a skops file may inflate, all members and nested ``.npz`` members together."""
MAX_MEMBERS = 200_000
"""Members of the zip (each tree of a forest takes a few)."""
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip (a sparse matrix's ``.npz``) starts; such a member is checked as an archive too."""


SKOPS_MODULE = "skops.io"
KEPT_OUT = frozenset(
    {
        *(f"sklearn.externals.array_api_compat.{lib}" for lib in ("cupy", "dask", "torch")),
        "pytest",
    }
)
"""Modules ``import skops.io`` would import for nothing a model needs; kept out of it.

That import lists scikit-learn's estimators (``sklearn.utils.all_estimators`` in
``skops.io._trusted_types``), which imports every package under ``sklearn`` to look inside it, and
``sklearn.utils._testing``. The packages include scikit-learn's array-API adapters for other array
libraries, and through them torch (seconds, and gigabytes of address space) wherever torch is
installed; ``sklearn.utils._testing`` imports pytest, where installed, for its test markers. Should
the list be made after all (``import_skops_io`` skips it), it skips everything under
``sklearn.externals`` and uses no marker, so it comes out the same without them; a model that
computes on torch arrays imports its adapter when it needs it."""


def import_skops_io() -> ModuleType:
    """``skops.io``, imported without listing scikit-learn's estimators and without torch, CuPy,
    Dask or pytest (KEPT_OUT).

    skops lists the estimators for its default trust, which Dockyard never uses: every load passes
    the types ``read_skops`` found, each approved by Dockyard's own allow-list
    (``runtimes.trust``, which decides one name at a time without the list). Making the list imports
    every scikit-learn module — seconds of CPU at every server start and every command that reads
    a model — so while skops is imported its ``all_estimators`` lists none (skops's default
    trust then names no estimator, which only makes ``get_untrusted_types`` report more of a file's
    types, all of which ``read_skops`` names anyway).
    """
    loaded = sys.modules.get(SKOPS_MODULE)
    if loaded is not None:
        return loaded
    import sklearn.utils

    listing = sklearn.utils.all_estimators
    keep_out = _KeepOut(KEPT_OUT, threading.get_ident())
    sys.meta_path.insert(0, keep_out)
    sklearn.utils.all_estimators = _no_estimators
    try:
        return importlib.import_module(SKOPS_MODULE)
    finally:
        sklearn.utils.all_estimators = listing
        sys.meta_path.remove(keep_out)


def _no_estimators(type_filter: object = None) -> list[tuple[str, type]]:
    """``all_estimators`` while skops is imported: none listed (see ``import_skops_io``)."""
    return []


class _KeepOut(importlib.abc.MetaPathFinder):
    """Answers ModuleNotFoundError for ``names`` imported by one thread (the one importing skops):
    ``pkgutil.walk_packages`` passes over a package that cannot be imported, scikit-learn over a
    missing pytest. A name imported already is not looked up, so it is not affected."""

    def __init__(self, names: frozenset[str], thread: int) -> None:
        self.names = names
        self.thread = thread

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname in self.names and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"{fullname} is not imported with skops.io", name=fullname)
        return None


@dataclass(frozen=True)
class SkopsFile:
    """A skops file's bytes, checked to inflate within bounds, and every type its schema names."""

    data: bytes
    names: frozenset[str]


def read_skops(path: Path) -> SkopsFile:
    """Read ``path`` once, check its sizes, and list the types it names; InvalidInput otherwise.

    The names are those of every node of the schema (and the constructors some nodes call), plus
    what ``skops.io.get_untrusted_types`` reports beyond them (a bound method's name); skops's own
    default trust plays no part, so Dockyard's allow-list decides about every one of them.
    """
    skops_io = import_skops_io()
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{path.name} is not a skops file (not a zip archive)") from exc
    with archive:
        sizes = _checked_sizes(path.name, archive)
        schema = json.loads(archive.read(SCHEMA))
    names, files = _walk(schema)
    inflated = sum(sizes.get(name, 0) * count for name, count in files.items())
    if inflated > MAX_MODEL_BYTES:
        raise InvalidInput(
            f"{path.name}: loading it would inflate {inflated:,} bytes (members read "
            f"{sum(files.values()):,} times), more than the {MAX_MODEL_BYTES:,} Dockyard allows "
            "(MAX_MODEL_BYTES)"
        )
    names |= set(skops_io.get_untrusted_types(data=data))
    return SkopsFile(data, frozenset(names))


def _checked_sizes(file_name: str, archive: zipfile.ZipFile) -> dict[str, int]:
    """Each member's inflated size, nested archives included, once the limits are known to hold."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InvalidInput(
            f"{file_name} holds {len(infos):,} members, more than the {MAX_MEMBERS:,} "
            "Dockyard reads (MAX_MEMBERS)"
        )
    schemas = [info for info in infos if info.filename == SCHEMA]
    if not schemas:
        raise InvalidInput(f"{file_name} is not a skops file (it has no {SCHEMA})")
    for info in schemas:
        if info.file_size > MAX_SCHEMA_BYTES:
            raise InvalidInput(
                f"{file_name}: {SCHEMA} inflates to {info.file_size:,} bytes, more than the "
                f"{MAX_SCHEMA_BYTES:,} Dockyard reads (MAX_SCHEMA_BYTES); refusing to load it"
            )
    _check_total(file_name, sum(info.file_size for info in infos))
    sizes = {info.filename: info.file_size for info in infos}
    total = sum(sizes.values())
    for info in infos:
        if info.filename == SCHEMA or not _is_zip(archive, info):
            continue
        with zipfile.ZipFile(io.BytesIO(archive.read(info))) as nested:
            inner = nested.infolist()
            if len(inner) > MAX_MEMBERS:
                raise InvalidInput(
                    f"{file_name}: {info.filename} holds {len(inner):,} members, more than the "
                    f"{MAX_MEMBERS:,} Dockyard reads (MAX_MEMBERS)"
                )
            inflated = sum(member.file_size for member in inner)
        sizes[info.filename] += inflated
        total += inflated
        _check_total(file_name, total)
    return sizes


def _check_total(file_name: str, total: int) -> None:
    if total > MAX_MODEL_BYTES:
        raise InvalidInput(
            f"{file_name} inflates to {total:,} bytes, more than the {MAX_MODEL_BYTES:,} "
            "Dockyard allows (MAX_MODEL_BYTES); refusing to load it"
        )


def _is_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a member starts like a zip; inflates four bytes of it, not the whole member."""
    if info.file_size < len(ZIP_MAGIC[0]):
        return False
    with archive.open(info) as member:
        return member.read(len(ZIP_MAGIC[0])) in ZIP_MAGIC


def _walk(schema: Any) -> tuple[set[str], Counter[str]]:
    """Every ``module.Class`` a schema names, and how many nodes read each member file.

    A node is a dict with string ``__module__`` and ``__class__`` (a ``__reduce__`` constructor is
    spelled the same way); walking every dict, node or not, can only name more. Iterative, so a
    deeply nested schema cannot exhaust the stack.
    """
    names: set[str] = set()
    files: Counter[str] = Counter()
    for value in _values(schema):
        if not isinstance(value, dict):
            continue
        module, cls = value.get("__module__"), value.get("__class__")
        if isinstance(module, str) and isinstance(cls, str):
            names.add(f"{module}.{cls}")
        if "__loader__" in value and isinstance(value.get("file"), str):
            files[value["file"]] += 1
    return names, files


def _values(root: Any) -> Iterator[Any]:
    stack = [root]
    while stack:
        value = stack.pop()
        yield value
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
