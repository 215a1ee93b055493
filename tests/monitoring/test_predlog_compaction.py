"""Compaction of the prediction log, on real files: a worker's one-second segments of a past
hour become one merged segment that reads back exactly the same rows; readers running while
segments are merged never see a row twice or miss one (nor when a listing misses both the merged
file and its originals); a compaction killed between linking the merged file and deleting the
originals is harmless and finished by the next; sealed segments merge sealed; a dead worker's
segments are merged by another; a late flush is never hidden by a merged range; labels merge."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clocks import Clock
from dockyard.config import Settings
from dockyard.encryption import Cipher
from dockyard.home import Home
from dockyard.monitoring.feedback import (
    LABEL_SEGMENTS_MAX,
    labels_from_json,
    read_labels,
    store_labels,
)
from dockyard.monitoring.predlog import (
    ORPHAN_AGE_S,
    PredictionLog,
    compact_folder,
    compaction_lock,
    log_cipher,
    merge_segments,
    read_predictions,
    storage,
)
from dockyard.monitoring.scheduler import MonitorScheduler
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from dockyard.registry.store import RegistryStore
from dockyard.security.principals import local_user
from registry.conftest import DIGEST, LINEAGE

HOUR = datetime(2025, 3, 1, 10, tzinfo=UTC)
SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP64", (-1,)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)),),
    tabular=True,
)
VERSION = ModelVersion("fraud", 1, "sklearn", ArtifactRef(DIGEST, "skops"), SIGNATURE, LINEAGE)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def clock() -> Clock:
    return Clock(HOUR)


def make_log(home: Home, clock: Clock, cipher: Cipher | None = None) -> PredictionLog:
    return PredictionLog(
        home.root / "predictions", clock=clock, cipher=cipher, compact_every_s=None
    )


def log_seconds(
    log: PredictionLog, clock: Clock, start: datetime, seconds: int, every: int = 1
) -> None:
    """One request (two rows) every ``every`` seconds, each flushed: a segment each."""
    for second in range(0, seconds, every):
        moment = start + timedelta(seconds=second)
        clock.at(moment)
        x = np.array([float(second), -float(second)])
        request = f"{moment:%H%M%S}"
        log.append(VERSION, request, "p", 0.01, {"x": x}, {"predict": np.array([1, 0])})
        log.flush()


def files(home: Home) -> list[Path]:
    return sorted((home.root / "predictions" / "fraud").rglob("*.parquet*"))


def day_folder(home: Home) -> Path:
    return home.root / "predictions" / "fraud" / "2025-03-01"


def rows(home: Home, cipher: Cipher | None = None, **options: object) -> pa.Table:
    table = read_predictions(home, "fraud", cipher=cipher, **options)  # type: ignore[arg-type]
    return table.sort_by([("request_id", "ascending"), ("row", "ascending")])


def test_a_past_hour_of_many_segments_becomes_one_with_the_same_rows(
    home: Home, clock: Clock
) -> None:
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 3600, every=6)  # a busy worker flushes every second
    assert len(files(home)) == 600
    before = rows(home)
    clock.at(HOUR + timedelta(hours=1, minutes=10))
    assert log.compact() == 600
    (merged,) = files(home)
    pid = os.getpid()
    first, last = int(HOUR.timestamp() * 1000), int((HOUR.timestamp() + 3594) * 1000)
    assert merged.name == f"{pid}-{first}-{last}.parquet"
    assert rows(home).equals(before)
    # Its name still tells its newest row: a window starting later does not open it.
    later = read_predictions(home, "fraud", since=HOUR + timedelta(hours=1))
    merged.write_bytes(merged.read_bytes()[:100])  # damaged: would fail if read
    assert read_predictions(home, "fraud", since=HOUR + timedelta(hours=1)).equals(later)


def test_the_current_hour_merges_small_segments_and_the_hour_merges_once_over(
    home: Home, clock: Clock
) -> None:
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 600)  # 10:00-10:10
    expected = rows(home)
    clock.at(HOUR + timedelta(minutes=10))  # 5 minutes old: 10:00 to 10:05 merge
    log.compact()
    assert len(files(home)) == 1 + 300
    log.compact()  # nothing new: the merged segment is not rewritten
    assert len(files(home)) == 1 + 300
    clock.at(HOUR + timedelta(minutes=20))
    log.compact()
    assert len(files(home)) == 2  # the hour is not over: two merged segments
    assert rows(home).equals(expected)
    clock.at(HOUR + timedelta(hours=1, minutes=6))
    log.compact()
    (merged,) = files(home)
    assert merged.name.count("-") == 2
    assert rows(home).equals(expected)


def test_a_late_flush_goes_past_the_merged_range_and_is_read(home: Home, clock: Clock) -> None:
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 10)
    clock.at(HOUR + timedelta(hours=2))
    log.compact()
    log_seconds(log, clock, HOUR + timedelta(seconds=5), 1)  # a row of 10:00:05, written late
    table = read_predictions(home, "fraud")
    assert table.num_rows == 22
    assert table["request_id"].to_pylist().count("100005") == 4


def test_readers_during_compaction_never_see_a_row_twice_or_miss_one(
    home: Home, clock: Clock
) -> None:
    log = make_log(home, clock)
    errors: list[str] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            reads += 1
            least = log.written_rows
            table = read_predictions(home, "fraud", columns=["request_id", "row"])
            most = log.written_rows + 2  # a flush linked, not counted yet
            keys = list(zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True))
            if len(set(keys)) != len(keys):
                errors.append(f"{len(keys) - len(set(keys))} rows read twice")
            if not least <= len(keys) <= most:
                errors.append(f"{len(keys)} rows read, {least} to {most} written")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for minute in range(12):
            start = HOUR + timedelta(minutes=5 * minute)
            log_seconds(log, clock, start, 30)
            clock.at(start + timedelta(minutes=5, seconds=30))
            compact_folder(day_folder(home), None, now=clock(), age_s=60, max_bytes=8_000)
        clock.at(HOUR + timedelta(hours=2))
        compact_folder(day_folder(home), None, now=clock())
    finally:
        done.set()
        thread.join()
    assert not errors, errors[:5]
    assert reads > 10
    assert len(files(home)) < 12
    assert read_predictions(home, "fraud").num_rows == log.written_rows == 12 * 60


def test_a_listing_that_misses_both_the_merged_file_and_its_originals_is_read_again(
    home: Home, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder listing is not atomic: made while a merge links its file and deletes the
    originals, it may hold neither. The reader's second listing shows the merged file."""
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 20)
    log_seconds(log, clock, HOUR + timedelta(hours=2), 1)
    expected = rows(home)
    clock.at(HOUR + timedelta(hours=2, minutes=10))
    log.compact()
    real_listing = storage.listing
    calls = 0

    def torn(folder: Path) -> list[storage.Segment]:
        nonlocal calls
        calls += 1
        found = real_listing(folder)
        return found if calls > 1 else [segment for segment in found if not segment.merged]

    monkeypatch.setattr(storage, "listing", torn)
    assert rows(home).equals(expected)
    assert calls >= 3


def test_a_compaction_killed_between_link_and_delete_loses_and_doubles_nothing(
    home: Home, clock: Clock
) -> None:
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 50)
    expected = rows(home)
    originals = storage.listing(day_folder(home))
    merged = merge_segments(day_folder(home), originals, None)  # step 1 only, then "killed"
    assert merged is not None
    assert len(files(home)) == 51
    assert rows(home).equals(expected)
    assert rows(home, limit=7).num_rows == 7
    # A killed writer's temporary file is ignored, and removed once stale.
    temp = day_folder(home) / f".{merged.name}.1.tmp"
    temp.write_bytes(b"half a file")
    assert rows(home).equals(expected)
    os.utime(temp, (0, 0))
    # The next compaction deletes the covered originals (and merges nothing again).
    clock.at(HOUR + timedelta(hours=2))
    assert log.compact() == 50
    assert files(home) == [merged]
    assert not temp.exists()
    assert rows(home).equals(expected)


def test_sealed_segments_merge_sealed_and_need_the_key(home: Home, clock: Clock) -> None:
    settings = Settings(home=home.root, encryption_key=base64.b64encode(b"k" * 32).decode())
    cipher = log_cipher(settings, home)
    log = make_log(home, clock, cipher)
    log_seconds(log, clock, HOUR, 30)
    expected = rows(home, cipher)
    clock.at(HOUR + timedelta(hours=2))
    # A compactor without the key leaves them.
    assert compact_folder(day_folder(home), None, now=clock()).removed == 0
    assert log.compact() == 30
    (merged,) = files(home)
    assert merged.name.endswith(".parquet.sealed")
    assert b"100001" not in merged.read_bytes()
    assert rows(home, cipher).equals(expected)


def dead_pid() -> int:
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(process.stdout)


def test_a_dead_workers_segments_are_merged_by_another_under_the_lock(
    home: Home, clock: Clock
) -> None:
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 20)
    dead, alive = dead_pid(), os.getppid()
    for index, path in enumerate(files(home)):
        owner = dead if index % 2 else alive
        path.rename(path.with_name(path.name.replace(f"{os.getpid()}-", f"{owner}-")))
    expected = rows(home)
    folder = day_folder(home)
    now = HOUR.timestamp() + 20 + ORPHAN_AGE_S + 60
    with compaction_lock(folder.parent) as locked:
        assert locked
        assert compact_folder(folder, None, now=now).removed == 0  # busy: another worker has it
    assert compact_folder(folder, None, now=now).removed == 10
    names = [path.name for path in files(home)]
    assert sum(name.startswith(f"{dead}-") for name in names) == 1
    assert sum(name.startswith(f"{alive}-") for name in names) == 10  # a live worker's: left
    assert rows(home).equals(expected)


def test_a_worker_merges_its_own_segments_and_leaves_dead_workers_to_the_monitoring_process(
    home: Home, clock: Clock
) -> None:
    """A restarted server finds up to an hour of each dead worker's segments: merging them in a
    serving worker's writer thread held its GIL for seconds, so the worker merges only its own
    and the home's monitoring round (the scheduler) merges the dead pids'."""
    log = make_log(home, clock)
    log_seconds(log, clock, HOUR, 20)
    dead = dead_pid()
    for path in files(home)[1::2]:
        path.rename(path.with_name(path.name.replace(f"{os.getpid()}-", f"{dead}-")))
    expected = rows(home)
    clock.at(HOUR + timedelta(seconds=20 + ORPHAN_AGE_S + 60))
    assert log.compact() == 10
    names = [path.name for path in files(home)]
    assert sum(name.startswith(f"{dead}-") for name in names) == 10  # left as they were
    assert sum(name.startswith(f"{os.getpid()}-") for name in names) == 1
    store = RegistryStore.open(f"sqlite:///{home.database}")
    scheduler = MonitorScheduler(home, store, Settings(home=home.root), list)
    try:
        assert scheduler.run_once()
    finally:
        scheduler.close()
        store.close()
    names = [path.name for path in files(home)]
    assert sum(name.startswith(f"{dead}-") for name in names) == 1
    assert rows(home).equals(expected)


def test_the_writer_thread_compacts(home: Home, clock: Clock) -> None:
    log_seconds(make_log(home, clock), clock, HOUR, 20)
    clock.at(HOUR + timedelta(hours=2))
    log = PredictionLog(home.root / "predictions", clock=clock, flush_s=0.01, compact_every_s=0.01)
    log.append(VERSION, "now", "p", 0.01, {"x": np.zeros(1)}, {"predict": np.zeros(1, np.int64)})

    async def run() -> None:
        await log.start()
        for _ in range(200):
            if len(files(home)) == 2:
                break
            await asyncio.sleep(0.01)
        await log.close()

    asyncio.run(run())
    assert len(files(home)) == 2  # the old hour's 20 merged, and the new segment
    assert read_predictions(home, "fraud").num_rows == 41


def test_label_segments_merge_past_the_limit_keeping_the_latest_labels(home: Home) -> None:
    store = RegistryStore.open(f"sqlite:///{home.root / 'dockyard.db'}")
    folder = home.root / "labels" / "fraud"
    for call in range(LABEL_SEGMENTS_MAX):
        body = {"labels": [{"request_id": f"r{call % 10}", "label": call}]}
        store_labels(home, store, "fraud", labels_from_json(body), local_user(), None)
    assert len(list(folder.glob("*.parquet"))) == LABEL_SEGMENTS_MAX
    expected = read_labels(home, "fraud").sort_by("request_id")
    latest = [max(call for call in range(LABEL_SEGMENTS_MAX) if call % 10 == n) for n in range(10)]
    assert expected["label"].to_pylist() == list(map(float, latest))
    body = {"labels": [{"request_id": "new", "label": 1}]}
    store_labels(home, store, "fraud", labels_from_json(body), local_user(), None)
    assert len(list(folder.glob("*.parquet"))) == 1
    labels = read_labels(home, "fraud").sort_by("request_id")
    assert labels.select(["request_id", "label"]).to_pylist() == [
        *[{"request_id": "new", "label": 1.0}],
        *expected.select(["request_id", "label"]).to_pylist(),
    ]
    store.close()
