"""The prediction log mirrored to a bucket (``prediction_log_url``) and read back from it, against
a real S3 server (moto, on loopback): segments a real ``PredictionLog`` wrote appear under
``PREFIX/<machine>/<model>/<day>/<name>`` with their bytes, SHA-256 and size (sealed ones sealed);
compaction, a retention purge and an erasure's rewrite reach the bucket at the next pass; another
machine's objects are never touched; a second home reads both machines' rows through a cache that
follows the bucket and refuses an object altered there; a bucket that is down is one error record,
and the next pass sends everything."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from clocks import Clock
from dockyard.config import Settings, load_settings
from dockyard.errors import DockyardError, InvalidInput, NotFound
from dockyard.home import Home
from dockyard.monitoring.predlog import (
    PredictionLog,
    log_cipher,
    predictions_folder,
    purge_before,
    rewrite_segment,
)
from dockyard.monitoring.predlog.machines import read_machines
from dockyard.monitoring.predlog.mirror import LogMirror, Mirrored
from dockyard.monitoring.predlog.storage import SEGMENT_NAME
from dockyard.reliability.log_shipping import LogShipping, log_shipping
from monitoring.test_predlog import tabular_request, version_of
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401

LOGS = "logs/prod"
NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)
KEY = base64.b64encode(b"k" * 32).decode()


def settings_of(
    home: Home, bucket: Bucket, machine: str, url: str = "", **more: object
) -> Settings:
    flags = {
        "home": home.root,
        "prediction_log_url": url or f"s3://{bucket.name}/{LOGS}",
        "s3_endpoint_url": bucket.endpoint,
        "log_machine": machine,
        **more,
    }
    return load_settings(flags, env={})


def write(log: PredictionLog, clock: Clock, at: datetime, request_id: str) -> None:
    """One request of two rows answered at ``at``, flushed as its own segment."""
    clock.at(at)
    inputs, outputs = tabular_request(2, len(request_id))
    log.append(version_of("fraud", 1), request_id, "key:alice", 0.01, inputs, outputs)
    assert log.flush() == 2


def on_disk(home: Home) -> dict[str, bytes]:
    """Every segment file of the home's log (temporary files aside), by model/day/name."""
    root = home.root / "predictions"
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if SEGMENT_NAME.match(path.name)
    }


def in_bucket(bucket: Bucket, machine: str) -> dict[str, bytes]:
    """Every object of ``machine``'s folder, by its name relative to it."""
    start = f"{LOGS}/{machine}/"
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=start)
    return {
        item["Key"].removeprefix(start): bucket.client.get_object(
            Bucket=bucket.name, Key=item["Key"]
        )["Body"].read()
        for item in listed.get("Contents", ())
    }


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def make_home(tmp_path: Path, name: str) -> Home:
    return Home(tmp_path / name).ensure()


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_written_segments_appear_in_the_bucket_as_they_are_on_disk(
    tmp_path: Path, bucket: Bucket, clock: Clock, sealed: bool
) -> None:
    home = make_home(tmp_path, "a")
    settings = settings_of(home, bucket, "machine-a", encryption_key=KEY if sealed else "")
    cipher = log_cipher(settings, home)
    log = PredictionLog(home.root / "predictions", clock=clock, cipher=cipher, compact_every_s=None)
    for offset, request in enumerate(["r1", "r22", "r333"]):
        write(log, clock, NOW + timedelta(days=offset // 2, minutes=offset), request)
    day = predictions_folder(home, "fraud") / "2026-03-01"
    (day / ".123-456.parquet.1.tmp").write_bytes(b"half a segment")  # a writer's, unfinished
    local = on_disk(home)
    assert len(local) == 3
    assert {name.split("/")[1] for name in local} == {"2026-03-01", "2026-03-02"}

    mirror = LogMirror.from_settings(settings, home)
    assert mirror.run() == Mirrored(uploaded=3, deleted=0, kept=0)

    assert in_bucket(bucket, "machine-a") == local
    for name, data in local.items():
        head = bucket.client.head_object(Bucket=bucket.name, Key=f"{LOGS}/machine-a/{name}")
        assert head["Metadata"] == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": str(len(data)),
        }
        assert name.endswith(".sealed") is sealed
        assert data.startswith(b"PAR1") is not sealed  # sealed in the bucket too
    assert mirror.run() == Mirrored(uploaded=0, deleted=0, kept=3)
    # A new process remembers nothing: it checks the recorded digests and sends nothing again.
    assert LogMirror.from_settings(settings, home).run() == Mirrored(0, 0, 3)


def test_compaction_purge_and_erasure_reach_the_bucket_at_the_next_pass(
    tmp_path: Path, bucket: Bucket, clock: Clock
) -> None:
    home = make_home(tmp_path, "a")
    settings = settings_of(home, bucket, "machine-a")
    log = PredictionLog(home.root / "predictions", clock=clock, compact_every_s=None)
    write(log, clock, NOW - timedelta(days=1), "old")
    for minute, request in enumerate(["a", "bb", "ccc"]):
        write(log, clock, NOW + timedelta(minutes=minute), request)
    mirror = LogMirror.from_settings(settings, home)
    assert mirror.run().uploaded == 4

    clock.at(NOW + timedelta(hours=2))  # the hour is over: its three segments become one
    assert log.compact() == 3
    local = on_disk(home)
    [merged] = [name for name in local if name.split("/")[2].count("-") == 2]  # pid-first-last
    assert mirror.run() == Mirrored(uploaded=1, deleted=3, kept=1)
    assert in_bucket(bucket, "machine-a") == local

    purged = purge_before(predictions_folder(home, "fraud"), NOW - timedelta(hours=1), None)
    assert purged.segments == 1
    assert mirror.run() == Mirrored(uploaded=0, deleted=1, kept=1)
    assert in_bucket(bucket, "machine-a") == on_disk(home)
    assert list(on_disk(home)) == [merged]

    path = home.root / "predictions" / merged
    before = path.read_bytes()
    erased = rewrite_segment(path, lambda table: pc.equal(table["request_id"], "bb"), None)
    assert erased == 2
    assert mirror.run() == Mirrored(uploaded=1, deleted=0, kept=0)
    [(name, data)] = in_bucket(bucket, "machine-a").items()
    assert (name, data) == (merged, path.read_bytes())
    assert data != before


def test_another_machines_objects_and_foreign_objects_are_left_alone(
    tmp_path: Path, bucket: Bucket, clock: Clock
) -> None:
    home = make_home(tmp_path, "a")
    log = PredictionLog(home.root / "predictions", clock=clock, compact_every_s=None)
    write(log, clock, NOW, "mine")
    segment = "fraud/2026-03-01/1-1772359200000.parquet"
    others = {
        f"{LOGS}/machine-b/{segment}": b"machine b's",
        f"{LOGS}/machine-ab/{segment}": b"a name machine-a starts",
        f"{LOGS}/machine-a/notes.txt": b"not a segment",
        f"{LOGS}/machine-a/fraud/2026-03-01/x.parquet": b"not a segment name",
    }
    gone = f"{LOGS}/machine-a/{segment}"  # a segment of mine with no file here any more
    for key, data in {**others, gone: b"old"}.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)

    done = LogMirror.from_settings(settings_of(home, bucket, "machine-a"), home).run()

    assert done == Mirrored(uploaded=1, deleted=1, kept=0)
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{LOGS}/")["Contents"]
    left = {item["Key"] for item in listed}
    assert left == {*others, *(f"{LOGS}/machine-a/{name}" for name in on_disk(home))}
    for key, data in others.items():
        assert bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read() == data


def test_a_home_reads_every_machine_through_a_cache_that_follows_the_bucket(
    tmp_path: Path, bucket: Bucket, clock: Clock
) -> None:
    homes = {name: make_home(tmp_path, name) for name in ("machine-a", "machine-b")}
    settings = {
        name: settings_of(home, bucket, name, encryption_key=KEY) for name, home in homes.items()
    }
    sent: dict[str, list[str]] = {}
    for index, (name, home) in enumerate(homes.items()):
        cipher = log_cipher(settings[name], home)
        log = PredictionLog(home.root / "predictions", clock=clock, cipher=cipher)
        sent[name] = [f"{name}-{n}" for n in range(3)]
        for n, request in enumerate(sent[name]):
            write(log, clock, NOW + timedelta(minutes=2 * n + index), request)
        LogMirror.from_settings(settings[name], home).run()
    reader = homes["machine-a"]

    def read(
        machines: list[str] | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[str]:
        table = read_machines(
            reader, settings["machine-a"], "fraud", machines, since=since, limit=limit
        )
        return table["request_id"].to_pylist()[::2]  # two rows a request

    pairs = zip(sent["machine-a"], sent["machine-b"], strict=True)
    every = [request for pair in pairs for request in pair]
    assert read() == every  # both machines, in time order
    assert read(["machine-b"]) == sent["machine-b"]
    assert read(since=NOW + timedelta(minutes=3)) == every[3:]
    assert read(limit=4) == every[4:]  # four rows: the newest two requests
    cache = reader.predictions_cache / "machine-b" / "fraud"
    cached = {
        f"fraud/{path.relative_to(cache).as_posix()}": path.read_bytes()
        for path in cache.glob("*/*")
        if SEGMENT_NAME.match(path.name)
    }
    assert cached == on_disk(homes["machine-b"])  # sealed as they were written
    assert not (reader.predictions_cache / "machine-a").exists()  # its own: read from its folder
    with pytest.raises(NotFound, match="no machine 'machine-c'"):
        read(["machine-c"])

    # An erasure on machine b, mirrored: the cached copy is replaced before anything is read.
    logged_b = homes["machine-b"].root / "predictions"
    first = sorted(p for p in logged_b.rglob("*") if SEGMENT_NAME.match(p.name))[0]
    cipher_b = log_cipher(settings["machine-b"], homes["machine-b"])
    rewrite_segment(first, lambda table: pc.equal(table["row"], 1), cipher_b)
    LogMirror.from_settings(settings["machine-b"], homes["machine-b"]).run()
    table = read_machines(reader, settings["machine-a"], "fraud", ["machine-b"], since=None)
    assert table.num_rows == 2 * 3 - 1

    # An object altered in the bucket (its recorded digest kept) is refused and not cached.
    key = f"{LOGS}/machine-b/{first.relative_to(logged_b).as_posix()}"
    metadata = bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"]
    data = first.read_bytes()
    altered = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=altered, Metadata=metadata)
    with pytest.raises(DockyardError, match="altered in the bucket"):
        read(["machine-b"])
    assert not (cache / first.parent.name / first.name).exists()


def test_a_bucket_that_is_down_is_one_error_and_the_next_pass_sends_everything(
    tmp_path: Path, bucket: Bucket, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    home = make_home(tmp_path, "a")
    later = f"{bucket.name}-later"
    settings = settings_of(home, bucket, "machine-a", url=f"s3://{later}/{LOGS}")
    assert log_shipping(home, settings_of(home, bucket, "m", url="")) != []
    assert log_shipping(home, Settings(home=home.root)) == []
    [job] = log_shipping(home, settings)
    assert isinstance(job, LogShipping)
    log = PredictionLog(home.root / "predictions", clock=clock, compact_every_s=None)
    for minute, request in enumerate(["a", "bb"]):
        write(log, clock, NOW + timedelta(minutes=minute), request)

    with caplog.at_level(logging.INFO, logger="dockyard"):
        assert job.run_once() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "tried again in 60 s" in errors[0]
    assert "does not exist" in errors[0]

    bucket.client.create_bucket(Bucket=later)
    job.start()  # a pass at once, then one every interval
    deadline = time.monotonic() + 20
    while len(in_later(bucket, later)) < 2:
        assert time.monotonic() < deadline, "the job did not mirror the log"
        time.sleep(0.05)
    job.close()
    assert in_later(bucket, later) == on_disk(home)


def in_later(bucket: Bucket, name: str) -> dict[str, bytes]:
    start = f"{LOGS}/machine-a/"
    listed = bucket.client.list_objects_v2(Bucket=name, Prefix=start)
    return {
        item["Key"].removeprefix(start): bucket.client.get_object(Bucket=name, Key=item["Key"])[
            "Body"
        ].read()
        for item in listed.get("Contents", ())
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"prediction_log_url": "/srv/logs"}, "prediction_log_url must be s3://BUCKET/PREFIX"),
        ({"prediction_log_url": "s3://"}, "prediction_log_url must be s3://BUCKET/PREFIX"),
        ({"prediction_log_url": "s3://b/p", "log_machine": "../b"}, "log_machine '../b' cannot"),
        ({"prediction_log_url": "s3://b/p", "log_machine": "a/b"}, "log_machine 'a/b' cannot"),
        ({"log_ship_interval_s": 0}, "log_ship_interval_s must be positive"),
    ],
    ids=["not-s3", "no-bucket", "dot-dot", "slash", "interval"],
)
def test_bad_prediction_log_settings_are_named(
    flags: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings({"home": tmp_path, **flags}, env={})


def test_the_machine_is_the_host_name_unless_set(tmp_path: Path) -> None:
    import socket

    settings = load_settings({"home": tmp_path, "prediction_log_url": "s3://b/p"}, env={})
    assert settings.effective_log_machine() == socket.gethostname()
    named = load_settings({"home": tmp_path}, env={"DOCKYARD_LOG_MACHINE": "web-1.eu"})
    assert named.effective_log_machine() == "web-1.eu"
