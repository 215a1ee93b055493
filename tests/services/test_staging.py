"""Staging folders: named after their process, swept when it is gone, with the blob it claimed
deleted only when nothing else uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.home import process_is_alive
from dockyard.registry.artifacts import LocalArtifactStore
from dockyard.services.staging import (
    claim,
    discard_if_unused,
    owner_of,
    staging_folder,
    sweep,
)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_is_alive(child.pid)
    return child.pid


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _blob(artifacts: LocalArtifactStore, tmp_path: Path, content: bytes) -> str:
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    return artifacts.put(source)


def _left_by(root: Path, pid: int, digest: str | None = None) -> Path:
    """A staging folder as a killed process ``pid`` leaves it."""
    folder = root / f"{pid}-register-abc123"
    folder.mkdir(parents=True)
    (folder / "model.skops").write_bytes(b"partial copy")
    if digest is not None:
        claim(folder, digest)
    return folder


def test_a_staging_folder_is_named_after_its_process_and_removed_after_use(tmp_path: Path) -> None:
    with staging_folder(tmp_path / "tmp", "upload") as folder:
        assert owner_of(folder) == os.getpid()
        assert folder.name.startswith(f"{os.getpid()}-upload-")
        (folder / "file").write_bytes(b"x")
    assert not folder.exists()


def test_sweep_removes_a_dead_process_folder_and_its_unused_blob(
    tmp_path: Path, artifacts: LocalArtifactStore, dead_pid: int
) -> None:
    root = tmp_path / "tmp"
    orphan = _blob(artifacts, tmp_path, b"orphan")
    left = _left_by(root, dead_pid, orphan)

    assert sweep(root, artifacts, is_used=lambda digest: False) == [left]
    assert not left.exists()
    assert not artifacts.exists(orphan)


def test_sweep_keeps_a_blob_a_version_or_a_live_registration_uses(
    tmp_path: Path, artifacts: LocalArtifactStore, dead_pid: int
) -> None:
    root = tmp_path / "tmp"
    used = _blob(artifacts, tmp_path, b"used by a version")
    claimed = _blob(artifacts, tmp_path, b"claimed by a running registration")
    _left_by(root, dead_pid, used)
    with staging_folder(root, "register") as running:
        claim(running, claimed)
        _left_by(root / "other", dead_pid)  # not a staging root entry: never looked into
        (root / f"{dead_pid}-upload-x").mkdir()
        claim(root / f"{dead_pid}-upload-x", claimed)

        removed = sweep(root, artifacts, is_used=lambda digest: digest == used)

        assert running.exists()
        assert sorted(path.name for path in removed) == sorted(
            [f"{dead_pid}-register-abc123", f"{dead_pid}-upload-x"]
        )
    assert artifacts.exists(used)
    assert artifacts.exists(claimed)
    assert (root / "other").exists()


def test_a_live_process_folder_is_kept(tmp_path: Path, artifacts: LocalArtifactStore) -> None:
    root = tmp_path / "tmp"
    digest = _blob(artifacts, tmp_path, b"in progress")
    left = _left_by(root, os.getppid(), digest)
    assert sweep(root, artifacts, is_used=lambda digest: False) == []
    assert left.exists()
    assert artifacts.exists(digest)


def test_a_failed_registration_deletes_only_a_blob_nothing_else_uses(
    tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    root = tmp_path / "tmp"
    mine = _blob(artifacts, tmp_path, b"mine alone")
    shared = _blob(artifacts, tmp_path, b"also claimed by another registration")
    committed = _blob(artifacts, tmp_path, b"stored as a committed version")
    with staging_folder(root, "register") as folder, staging_folder(root, "register") as other:
        claim(folder, mine)
        claim(other, shared)
        assert discard_if_unused(folder, mine, artifacts, is_used=lambda digest: False)
        assert not discard_if_unused(folder, shared, artifacts, is_used=lambda digest: False)
        assert not discard_if_unused(folder, committed, artifacts, is_used=lambda d: d == committed)
    assert not artifacts.exists(mine)
    assert artifacts.exists(shared)
    assert artifacts.exists(committed)
