"""``dockyard doctor``: exit 0 on a healthy home; on a damaged one each problem on stderr with its
repair and exit 14; ``--repair`` makes the safe repairs (leftovers of dead processes, secret file
modes) and leaves the others to the user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.services.register import Registration, register
from homes import open_unprotected


@pytest.fixture
def registered(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    workspace.hasher  # noqa: B018 - a secret file to check
    return home


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_healthy_home_passes(registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "doctor", "--home", str(registered))
    assert (code, err) == (0, "")
    assert "is consistent" in out


def test_a_missing_artifact_is_named_with_its_repair(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = next((registered / "artifacts").glob("??/*"))
    blob.unlink()
    code, _, err = run_cli(capsys, "doctor", "--home", str(registered), "--repair")
    assert code == 14
    assert f"version lr:1's artifact sha256:{blob.name} is missing" in err
    assert "dockyard backup restore" in err
    assert "dockyard models archive lr:1" in err


def test_repair_deletes_dead_leftovers_and_makes_secrets_private(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = _dead_pid()
    staging = registered / "tmp" / f"{pid}-register-x"
    staging.mkdir()
    partial = registered / "backups" / f".dockyard-backup-x.tar.gz.{pid}.partial"
    partial.write_bytes(b"half")
    secret = registered / "secrets" / "api-key-hash-key"
    os.chmod(secret, 0o644)
    code, _, err = run_cli(capsys, "doctor", "--home", str(registered))
    assert code == 14
    for path in (staging, partial, secret):
        assert str(path) in err
    code, out, err = run_cli(capsys, "doctor", "--home", str(registered), "--repair")
    assert (code, err) == (0, ""), err
    assert out.count("repaired:") == 3
    assert not staging.exists()
    assert not partial.exists()
    assert secret.stat().st_mode & 0o777 == 0o600


def test_a_damaged_log_segment_and_a_tampered_audit_trail_are_found(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3
    from contextlib import closing

    folder = registered / "predictions" / "lr" / "2026-01-01"
    folder.mkdir(parents=True)
    (folder / "1-2.parquet").write_bytes(b"not parquet")
    with closing(sqlite3.connect(registered / "dockyard.db")) as db, db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    code, _, err = run_cli(capsys, "doctor", "--home", str(registered))
    assert code == 14
    assert "1-2.parquet is unreadable" in err
    assert "audit entry 1: edited" in err
