"""Scratch folders under ``DOCKYARD_HOME/tmp`` (registrations' staging, Python-function models'
unpacked code), and the sweep that removes what a killed process left: its folders, and the blob a
registration stored but never committed a version for.

A folder is ``<pid>-<purpose>-<random>``, so a later start can tell a dead owner's folder from a
running one's (a CLI registration may run while a server starts). A registration writes the digest
of the artifact it is about to store into its folder (its claim); claims, and checking that a blob
is unused before deleting it, are done under one file lock, so a blob that a version or another
registration uses is never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from dockyard.home import DIR_MODE, process_is_alive
from dockyard.registry.artifacts import ArtifactStore, check_digest

logger = logging.getLogger(__name__)

CLAIM_FILE = "artifact.sha256"
LOCK_FILE = ".lock"

IsUsed = Callable[[str], bool]
"""Whether a committed version uses the artifact with this digest (the registry's answer)."""


def owner_of(folder: Path) -> int | None:
    """The process id a staging folder is named after, or None for a name Dockyard did not give."""
    owner = folder.name.partition("-")[0]
    return int(owner) if owner.isdigit() else None


@contextlib.contextmanager
def staging_folder(root: Path, purpose: str) -> Iterator[Path]:
    """A fresh private folder ``root/<pid>-<purpose>-…``, removed with its contents on exit."""
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{purpose}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def claim(folder: Path, digest: str) -> None:
    """Record in a staging folder that its registration is storing the blob ``digest``."""
    with _locked(folder.parent):
        (folder / CLAIM_FILE).write_text(check_digest(digest))


def discard_if_unused(folder: Path, digest: str, artifacts: ArtifactStore, is_used: IsUsed) -> bool:
    """After a failed registration (``folder`` is its staging folder): delete the blob it stored,
    unless a version or another registration's claim uses it. Returns whether it was deleted."""
    with _locked(folder.parent):
        return _discard(folder.parent, digest, artifacts, is_used, folder)


def sweep(root: Path, artifacts: ArtifactStore, is_used: IsUsed) -> list[Path]:
    """Remove the staging folders of processes that are gone, and each one's claimed blob when
    nothing uses it; return the folders removed."""
    if not root.is_dir():
        return []
    removed = []
    with _locked(root):
        for folder in sorted(root.iterdir()):
            pid = owner_of(folder)
            if pid is None or process_is_alive(pid):
                continue
            digest = _claim_of(folder)
            if digest is not None and artifacts.exists(digest):
                _discard(root, digest, artifacts, is_used, folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        logger.info("removed %d staging folder(s) of stopped processes", len(removed))
    return removed


def _discard(
    root: Path, digest: str, artifacts: ArtifactStore, is_used: IsUsed, folder: Path
) -> bool:
    others = (other for other in root.iterdir() if other != folder)
    if any(_claim_of(other) == digest for other in others) or is_used(digest):
        return False
    artifacts.remove(digest)
    return True


def _claim_of(folder: Path) -> str | None:
    try:
        text = (folder / CLAIM_FILE).read_text().strip()
    except OSError:
        return None
    return text or None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the staging root's lock (between processes, and threads of one process)."""
    descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
