"""``dockyard backup create|verify|restore`` on the command line: what each prints, the secrets
note of a plain backup, the passphrase from the environment, exit 13 for a damaged backup and 5
for a restore onto a home that is not empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from clirun import run_cli


def test_create_verify_restore(
    registered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "b.tar.gz"
    code, out, err = run_cli(
        capsys, "backup", "create", "--home", str(registered), "--out", str(out_file)
    )
    assert code == 0, err
    assert f"backup written: {out_file}" in out
    assert "secrets not included" in err
    code, out, _ = run_cli(capsys, "backup", "verify", str(out_file))
    assert code == 0
    assert "1 versions, audit chain verified" in out
    code, out, err = run_cli(
        capsys, "backup", "restore", str(out_file), "--home", str(tmp_path / "new")
    )
    assert code == 0, err
    assert (tmp_path / "new" / "dockyard.db").is_file()
    code, _, err = run_cli(
        capsys, "backup", "restore", str(out_file), "--home", str(tmp_path / "new")
    )
    assert code == 5
    assert "is not empty" in err


def test_an_encrypted_backup_takes_the_passphrase_from_the_environment(
    registered: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_BACKUP_PASSPHRASE", "a long passphrase")
    out_file = tmp_path / "b.enc"
    code, out, err = run_cli(
        capsys, "backup", "create", "--encrypt", "--home", str(registered), "--out", str(out_file)
    )
    assert code == 0, err
    assert "encrypted, secrets included" in out
    monkeypatch.setenv("DOCKYARD_BACKUP_PASSPHRASE", "another passphrase")
    code, _, err = run_cli(capsys, "backup", "verify", str(out_file))
    assert code == 13
    assert err.startswith("error: cannot decrypt the backup (wrong passphrase")


def test_a_damaged_backup_exits_13(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(b"\x1f\x8b" + b"\0" * 100)
    code, _, err = run_cli(capsys, "backup", "verify", str(path))
    assert code == 13
    assert err.count("\n") == 1
