"""Backups copied to a bucket (``backup_url``), against a real S3 server (moto, on loopback): the
upload with its SHA-256 and size recorded, multipart past the part size; the bucket's listing; a
download checked against what was recorded (altered or grown objects refused, nothing kept) that
restores the same home elsewhere; a bucket that cannot be reached leaving the local backup whole;
the schedule's retention in the bucket and its retry of what it could not send."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.errors import BackupInvalid, Conflict, InvalidInput, Unavailable
from dockyard.monitoring.predlog.layout import predictions_folder
from dockyard.monitoring.predlog.storage import write_segment
from dockyard.reliability.backup_schedule import BackupSchedule, backup_schedule
from dockyard.services.backup import create_backup
from dockyard.services.backup_bucket import BackupBucket, fetched, send_backups, upload_backup
from dockyard.services.backup_restore import restore_backup, verify_backup
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401
from servers import free_port

BACKUPS = "backups/prod"


def _url(bucket: Bucket) -> str:
    return f"s3://{bucket.name}/{BACKUPS}"


@pytest.fixture
def filled(
    home: Path,
    bucket: Bucket,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Workspace:
    """A home with a registered version and a prediction-log segment, backups going to the
    bucket."""
    workspace = open_unprotected(
        home, backup_url=_url(bucket), s3_endpoint_url=bucket.endpoint, backup_every="1h"
    )
    register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    table = pa.table({"request_id": ["a", "b"], "row": pa.array([0, 0], pa.int32())})
    write_segment(predictions_folder(workspace.home, "lr") / "2026-01-01", table, None, time.time())
    return workspace


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for folder in ("artifacts", "predictions", "labels")
        for path in (root / folder).rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def _keys(bucket: Bucket) -> list[str]:
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{BACKUPS}/")
    return sorted(item["Key"].removeprefix(f"{BACKUPS}/") for item in listed.get("Contents", ()))


def test_an_uploaded_backup_is_listed_and_restores_the_same_home_elsewhere(
    filled: Workspace, bucket: Bucket, tmp_path: Path
) -> None:
    backup = create_backup(filled)
    data = backup.path.read_bytes()

    uploaded = upload_backup(BackupBucket.from_settings(filled.settings), backup.path)

    key = f"{BACKUPS}/{backup.path.name}"
    assert uploaded.location == f"s3://{bucket.name}/{key}"
    head = bucket.client.head_object(Bucket=bucket.name, Key=key)
    assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data))}
    assert bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read() == data
    assert backup.path.read_bytes() == data  # the local copy kept as it was
    [listed] = BackupBucket.from_settings(filled.settings).backups()
    assert (listed.name, listed.size, listed.location) == (
        backup.path.name,
        len(data),
        uploaded.location,
    )

    machine = tmp_path / "other-machine"
    with fetched(uploaded.location, filled.settings, beside=machine) as path:
        assert path.parent.parent == machine
        assert path.read_bytes() == data
        verified = restore_backup(path, machine / "home")
    assert verified.versions == 1
    assert sorted(p.name for p in machine.iterdir()) == ["home"]  # the download is gone
    assert _files(machine / "home") == _files(filled.home.root)
    restored = open_unprotected(machine / "home")
    assert restored.resolve("lr:1").artifact == filled.resolve("lr:1").artifact


def test_a_large_backup_goes_up_in_parts_and_comes_down_whole(
    bucket: Bucket, tmp_path: Path
) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part
    source = tmp_path / "dockyard-backup-20260101T000000.000Z.tar.gz"
    data = np.random.default_rng(7).bytes(part + 1000)
    source.write_bytes(data)
    backups = BackupBucket(_url(bucket), endpoint_url=bucket.endpoint, part_bytes=part)

    backups.upload(source)

    head = bucket.client.head_object(Bucket=bucket.name, Key=f"{BACKUPS}/{source.name}")
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of two parts
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    (tmp_path / "down").mkdir()
    assert backups.download(source.name, tmp_path / "down").read_bytes() == data


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:], "SHA-256 it was uploaded"),
        (lambda data: data + b"more", "bytes, it was uploaded with"),
    ],
    ids=["altered", "grown"],
)
def test_an_object_changed_in_the_bucket_is_refused_and_nothing_is_restored(
    filled: Workspace,
    bucket: Bucket,
    tmp_path: Path,
    change: Callable[[bytes], bytes],
    refusal: str,
) -> None:
    backup = create_backup(filled)
    uploaded = upload_backup(BackupBucket.from_settings(filled.settings), backup.path)
    key = f"{BACKUPS}/{backup.path.name}"
    metadata = bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"]
    changed = change(backup.path.read_bytes())
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=changed, Metadata=metadata)

    machine = tmp_path / "other-machine"
    with (
        pytest.raises(BackupInvalid, match=refusal),
        fetched(uploaded.location, filled.settings, beside=machine) as path,
    ):
        restore_backup(path, machine / "home")
    assert list(machine.iterdir()) == []  # no home, no download left


def test_an_unreachable_bucket_leaves_the_local_backup_whole(
    filled: Workspace, tmp_path: Path
) -> None:
    backup = create_backup(filled)
    data = backup.path.read_bytes()
    closed = BackupBucket(
        "s3://nowhere/backups",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        timeout_s=0.2,
        attempts=1,
    )

    with pytest.raises(Unavailable, match=r"cannot be reached.*complete and kept"):
        upload_backup(closed, backup.path)

    assert backup.path.read_bytes() == data
    assert verify_backup(backup.path).versions == 1
    assert sorted(filled.home.backups.iterdir()) == [backup.path]


def test_an_upload_never_replaces_another_backup_of_the_same_name(
    filled: Workspace, bucket: Bucket
) -> None:
    backup = create_backup(filled)
    key = f"{BACKUPS}/{backup.path.name}"
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"someone else's")
    backups = BackupBucket.from_settings(filled.settings)

    with pytest.raises(Conflict, match="holds another backup"):
        upload_backup(backups, backup.path)
    assert bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read() == b"someone else's"
    bucket.client.delete_object(Bucket=bucket.name, Key=key)
    first = upload_backup(backups, backup.path)
    assert upload_backup(backups, backup.path) == first  # sent once: the same object again


def test_the_schedule_keeps_the_newest_in_the_bucket_too(filled: Workspace, bucket: Bucket) -> None:
    bucket.client.put_object(Bucket=bucket.name, Key=f"{BACKUPS}/by-hand.tar.gz", Body=b"")
    keep = 2
    [schedule] = backup_schedule(filled, dataclasses.replace(filled.settings, backup_keep=keep))
    assert isinstance(schedule, BackupSchedule)

    for _ in range(3):
        schedule.run_once()

    local = sorted(path.name for path in filled.home.backups.iterdir())
    assert len(local) == keep
    assert _keys(bucket) == sorted([*local, "by-hand.tar.gz"])  # the oldest deleted, not mine


def test_a_scheduled_upload_that_fails_is_logged_once_and_sent_next_time(
    filled: Workspace, bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"s3://{bucket.name}-later/{BACKUPS}"
    later = BackupBucket(missing, endpoint_url=bucket.endpoint)
    schedule = BackupSchedule(filled, 3600, 5, later)

    with caplog.at_level(logging.INFO, logger="dockyard"):
        schedule.run_once()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "tried again next interval" in errors[0]
    assert "does not exist" in errors[0]
    [first] = filled.home.backups.iterdir()
    assert verify_backup(first).versions == 1

    bucket.client.create_bucket(Bucket=f"{bucket.name}-later")
    schedule.run_once()

    local = sorted(path.name for path in filled.home.backups.iterdir())
    assert len(local) == 2
    listed = [backup.name for backup in later.backups()]
    assert listed == local  # the one that failed, sent with the new one


def test_a_backup_that_does_not_verify_is_never_uploaded(
    filled: Workspace, bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    backup = create_backup(filled)
    backup.path.write_bytes(backup.path.read_bytes()[:-50])
    refused: set[str] = set()
    backups = BackupBucket.from_settings(filled.settings)

    with caplog.at_level(logging.ERROR):
        assert send_backups(backups, filled.home.backups, 5, "", refused) == ([], [])
        assert send_backups(backups, filled.home.backups, 5, "", refused) == ([], [])
    assert refused == {backup.path.name}
    assert len([r for r in caplog.records if "is not uploaded" in r.getMessage()]) == 1
    assert _keys(bucket) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"backup_url": "/srv/backups"}, "backup_url must be s3://BUCKET/PREFIX"),
        ({"backup_url": "s3://"}, "backup_url must be s3://BUCKET/PREFIX"),
    ],
    ids=["not-s3", "no-bucket"],
)
def test_a_bad_backup_url_is_named(flags: dict[str, object], message: str, tmp_path: Path) -> None:
    from dockyard.config import load_settings

    with pytest.raises(InvalidInput, match=message):
        BackupBucket.from_settings(load_settings({"home": tmp_path, **flags}, env={}))
