"""Backups of a home: what one holds and how it restores (plain and encrypted), and the backup
files ``verify``/``restore`` refuse: altered, truncated, incomplete, extra or hostile members
(``..``, absolute paths, links, devices), a wrong passphrase, a non-empty target."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.errors import BackupInvalid, Conflict
from dockyard.home import Home
from dockyard.monitoring.predlog.layout import predictions_folder
from dockyard.monitoring.predlog.storage import write_segment
from dockyard.services.backup import create_backup, prune_backups, stale_partials
from dockyard.services.backup_restore import restore_backup, verify_backup
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected

PASSPHRASE = "correct horse battery"


@pytest.fixture
def filled(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Workspace:
    """A home with a registered version, a prediction-log segment and a label segment."""
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    table = pa.table({"request_id": ["a", "b"], "row": pa.array([0, 0], pa.int32())})
    write_segment(predictions_folder(workspace.home, "lr") / "2026-01-01", table, None, time.time())
    write_segment(home / "labels" / "lr", table, None, time.time())
    return workspace


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for folder in ("artifacts", "predictions", "labels", "secrets")
        for path in (root / folder).rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def test_a_plain_backup_restores_everything_but_the_secrets(
    filled: Workspace, tmp_path: Path
) -> None:
    backup = create_backup(filled)
    assert backup.path.parent == filled.home.backups
    restored = tmp_path / "restored"
    verified = restore_backup(backup.path, restored)
    assert verified.versions == 1
    before, after = _files(filled.home.root), _files(restored)
    assert {k: v for k, v in before.items() if not k.startswith("secrets/")} == after
    assert any(name.startswith("predictions/lr/2026-01-01/") for name in after)
    assert any(name.startswith("labels/lr/") for name in after)
    assert open_unprotected(restored).resolve("lr:1").artifact == filled.resolve("lr:1").artifact


def test_an_encrypted_backup_holds_the_secrets_private(filled: Workspace, tmp_path: Path) -> None:
    filled.hasher  # noqa: B018 - creates the API-key hash key in secrets/
    backup = create_backup(filled, tmp_path / "b.enc", PASSPHRASE)
    assert b"api-key-hash-key" not in backup.path.read_bytes()
    with pytest.raises(BackupInvalid, match="wrong passphrase"):
        verify_backup(backup.path, "not the passphrase")
    restored = tmp_path / "restored"
    restore_backup(backup.path, restored, PASSPHRASE)
    assert _files(restored) == _files(filled.home.root)
    key = restored / "secrets" / "api-key-hash-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_truncated_encrypted_backup_is_refused(filled: Workspace, tmp_path: Path) -> None:
    backup = create_backup(filled, tmp_path / "b.enc", PASSPHRASE)
    data = backup.path.read_bytes()
    backup.path.write_bytes(data[: len(data) - 10])
    with pytest.raises(BackupInvalid, match="truncated"):
        verify_backup(backup.path, PASSPHRASE)


def test_a_restore_refuses_a_home_that_is_not_empty(filled: Workspace, tmp_path: Path) -> None:
    backup = create_backup(filled)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="not empty"):
        restore_backup(backup.path, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(info, tar.extractfile(info).read()) for info in tar]  # type: ignore[union-attr]


def _rewrite(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb") as zipped,
        tarfile.open(fileobj=zipped, mode="w|") as tar,
    ):
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())


def _hostile(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    return info


def _altered(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    artifact = next(i for i, (info, _) in enumerate(members) if info.name.startswith("artifacts/"))
    info, data = members[artifact]
    return [
        *members[:artifact],
        (info, data[:-1] + bytes([data[-1] ^ 1])),
        *members[artifact + 1 :],
    ]


BROKEN = {
    "altered": (_altered, "does not match its manifest's SHA-256"),
    "truncated": (lambda m: m[:-1], "no manifest"),
    "missing": (
        lambda m: [x for x in m if not x[0].name.startswith("artifacts/")],
        "does not hold",
    ),
    "extra": (lambda m: [(_hostile("labels/lr/9-9.parquet"), b"x"), *m], "does not list"),
    "climbing": (lambda m: [(_hostile("artifacts/../../evil"), b"x"), *m], "refused name"),
    "absolute": (lambda m: [(_hostile("/tmp/evil"), b"x"), *m], "refused name"),
    "outside": (lambda m: [(_hostile("etc/passwd"), b"x"), *m], "no part of a Dockyard home"),
    "symlink": (lambda m: [(_hostile("artifacts/ln", tarfile.SYMTYPE), b""), *m], "not a regular"),
    "hardlink": (lambda m: [(_hostile("artifacts/ln", tarfile.LNKTYPE), b""), *m], "not a regular"),
    "device": (lambda m: [(_hostile("artifacts/dev", tarfile.CHRTYPE), b""), *m], "not a regular"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_or_hostile_backup_is_refused_and_nothing_is_written(
    filled: Workspace, tmp_path: Path, case: str
) -> None:
    change, message = BROKEN[case]
    backup = create_backup(filled)
    _rewrite(backup.path, change(_members(backup.path)))
    with pytest.raises(BackupInvalid, match=message):
        verify_backup(backup.path)
    target = tmp_path / "restored"
    with pytest.raises(BackupInvalid, match=message):
        restore_backup(backup.path, target)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert not (tmp_path / "evil").exists()


def test_garbage_is_not_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "garbage.tar.gz"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(BackupInvalid, match="damaged or truncated"):
        verify_backup(path)


def test_a_manifest_listing_a_different_registry_is_refused(filled: Workspace) -> None:
    backup = create_backup(filled)
    members = _members(backup.path)
    info, data = members[-1]
    manifest = json.loads(data)
    manifest["format"] = 99
    _rewrite(backup.path, [*members[:-1], (info, json.dumps(manifest).encode())])
    with pytest.raises(BackupInvalid, match="format 99"):
        verify_backup(backup.path)


def test_retention_deletes_the_oldest_scheduled_backups_only(filled: Workspace) -> None:
    made = [create_backup(filled).path for _ in range(3)]
    mine = filled.home.backups / "by-hand.tar.gz"
    mine.write_bytes(b"")
    assert prune_backups(filled.home.backups, keep=2) == made[:1]
    assert sorted(filled.home.backups.iterdir()) == sorted([*made[1:], mine])
    assert stale_partials(Home(filled.home.root).backups) == []
