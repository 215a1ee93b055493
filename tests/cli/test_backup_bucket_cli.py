"""``dockyard backup`` with ``backup_url`` (DOCKYARD_BACKUP_URL) on a real S3 server (moto, on
loopback): ``create`` uploads, ``list`` shows both copies, ``verify`` and ``restore`` take an
``s3://`` URL; an object altered in the bucket exits 13 restoring nothing; a bucket that cannot be
reached exits 7 with one line, the local backup complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clirun import run_cli
from dockyard.services.backup_restore import verify_backup
from homes import open_unprotected
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401
from servers import free_port


@pytest.fixture
def to_bucket(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> str:
    """Backups going to the bucket, as a deployment's environment says: the backup_url."""
    url = f"s3://{bucket.name}/backups"
    monkeypatch.setenv("DOCKYARD_BACKUP_URL", url)
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", bucket.endpoint)
    return url


def test_create_uploads_list_shows_both_and_a_restore_from_the_bucket_serves_the_same(
    registered: Path, to_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "backup", "create", "--home", str(registered))
    assert code == 0, err
    [local] = (registered / "backups").iterdir()
    url = f"{to_bucket}/{local.name}"
    assert f"backup written: {local}" in out
    assert f"backup uploaded: {url} ({local.stat().st_size} bytes, sha256 recorded)" in out

    code, out, err = run_cli(capsys, "backup", "list", "--home", str(registered), "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(b["name"], b["size"], b["location"]) for b in listed] == [
        (local.name, local.stat().st_size, str(local)),
        (local.name, local.stat().st_size, url),
    ]
    code, out, _ = run_cli(capsys, "backup", "list", "--home", str(registered))
    assert code == 0
    assert out.count(local.name) >= 2  # the table: both copies

    code, out, err = run_cli(capsys, "backup", "verify", url)
    assert code == 0, err
    assert "1 versions, audit chain verified" in out

    new = tmp_path / "machine-b" / "home"
    code, out, err = run_cli(capsys, "backup", "restore", url, "--home", str(new))
    assert code == 0, err
    assert f"restored {url} into {new}" in out
    assert sorted(p.name for p in new.parent.iterdir()) == ["home"]  # no download left
    restored = open_unprotected(new).resolve("lr:1")
    assert restored.artifact == open_unprotected(registered).resolve("lr:1").artifact


def test_an_out_file_the_bucket_could_not_list_is_refused_before_it_is_written(
    registered: Path, to_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "b.zip"
    code, _, err = run_cli(
        capsys, "backup", "create", "--home", str(registered), "--out", str(out_file)
    )
    assert code == 2
    assert "give --out such a name" in err
    assert not out_file.exists()
    assert list((registered / "backups").iterdir()) == []


def test_a_backup_altered_in_the_bucket_exits_13_and_restores_nothing(
    registered: Path,
    to_bucket: str,
    bucket: Bucket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(capsys, "backup", "create", "--home", str(registered))
    assert code == 0, err
    [local] = (registered / "backups").iterdir()
    key = f"backups/{local.name}"
    metadata = bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"]
    data = bytearray(local.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes, the recorded metadata kept
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=bytes(data), Metadata=metadata)

    new = tmp_path / "machine-b" / "home"
    code, out, err = run_cli(
        capsys, "backup", "restore", f"{to_bucket}/{local.name}", "--home", str(new)
    )

    assert code == 13
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert "does not match the SHA-256 it was uploaded with" in err
    assert list(new.parent.iterdir()) == []
    code, _, err = run_cli(capsys, "backup", "verify", f"{to_bucket}/{local.name}")
    assert code == 13
    assert "SHA-256" in err
    gone = f"{to_bucket}/dockyard-backup-20200101T000000.000Z.tar.gz"
    code, _, err = run_cli(capsys, "backup", "restore", gone, "--home", str(new))
    assert code == 4
    assert f"error: no backup {gone}" in err


@pytest.mark.usefixtures("aws_credentials")
def test_a_bucket_that_cannot_be_reached_exits_7_and_the_local_backup_is_complete(
    registered: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("DOCKYARD_BACKUP_URL", "s3://backups/prod")
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", closed)
    monkeypatch.setenv("DOCKYARD_S3_TIMEOUT_S", "0.2")

    code, out, err = run_cli(capsys, "backup", "create", "--home", str(registered))

    assert code == 7
    [local] = (registered / "backups").iterdir()
    assert f"backup written: {local}" in out
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "the backup bucket cannot be reached" in line
    assert closed in line
    assert f"the backup {local} is complete and kept" in line
    assert verify_backup(local).versions == 1
    code, out, err = run_cli(capsys, "backup", "list", "--home", str(registered), "--json")
    assert code == 7
    assert [b["location"] for b in json.loads(out)] == [str(local)]
    assert "cannot be reached" in err
