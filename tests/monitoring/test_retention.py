"""Retention on real Parquet segments: ``[governance] retention`` read once; rows older than the
cutoff go (whole day folders, whole segments, the old part of a segment that straddles it, copies
left in segments a merged one covers, old labels), every newer row stays, sealed segments stay
sealed; compactions pause while a purge rewrites; a live writer keeps writing through purges
without losing a row; the monitoring jobs purge every registered model and audit each purge."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert, select

from clirun import run_cli
from clocks import Clock
from dockyard.config import Settings, load_settings
from dockyard.encryption import Cipher
from dockyard.errors import InvalidInput, Unavailable
from dockyard.governance.retention import retention_period
from dockyard.home import Home
from dockyard.monitoring.feedback import LABEL_SCHEMA, labels_folder, read_labels
from dockyard.monitoring.predlog import (
    LOCK_NAME,
    REWRITE_LOCK,
    TIME,
    PredictionLog,
    Purged,
    compact_folder,
    compaction_lock,
    exclusive_lock,
    log_cipher,
    merge_segments,
    purge_before,
    read_predictions,
    read_segment,
    write_segment,
)
from dockyard.monitoring.predlog.storage import listing
from dockyard.monitoring.scheduler import MonitorScheduler
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import audit_log, drift_reports
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from registry.conftest import DIGEST, LINEAGE
from servers import Server

DAY = datetime(2025, 3, 10, tzinfo=UTC)
CUTOFF = DAY + timedelta(hours=12)
SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP64", (-1,)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)),),
    tabular=True,
)
VERSION = ModelVersion("fraud", 1, "sklearn", ArtifactRef(DIGEST, "skops"), SIGNATURE, LINEAGE)
KEY = base64.b64encode(b"k" * 32).decode()
ANSWER = {"predict": np.array([1])}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY)


@pytest.fixture
def store(home: Home) -> Iterator[RegistryStore]:
    registry = RegistryStore.open(f"sqlite:///{home.database}")
    yield registry
    registry.close()


def make_log(home: Home, clock: Clock, cipher: Cipher | None = None) -> PredictionLog:
    return PredictionLog(
        home.root / "predictions", clock=clock, cipher=cipher, compact_every_s=None
    )


def log_at(log: PredictionLog, clock: Clock, *moments: datetime) -> None:
    """One one-row request answered at each moment, all written by one flush (one segment per
    day); the request id is the moment."""
    for moment in moments:
        clock.at(moment)
        x = np.array([[moment.timestamp()]])
        log.append(VERSION, moment.isoformat(), "p", 0.01, {"x": x}, ANSWER)
    log.flush()


def folder(home: Home) -> Path:
    return home.root / "predictions" / "fraud"


def files(home: Home) -> list[Path]:
    return sorted(folder(home).rglob("*.parquet*"))


def times(table: pa.Table) -> list[datetime]:
    return sorted(table["time"].to_pylist())


def on_disk(paths: Sequence[Path], cipher: Cipher | None = None) -> pa.Table:
    """Every row of every file, covered segments included: what a purge must leave clean."""
    tables = [read_segment(path, ["time"], None, cipher) for path in paths]
    return pa.concat_tables(tables) if tables else pa.table({"time": pa.array([], TIME)})


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"retention": "90d"}, timedelta(days=90)),
        ({"retention": "12h"}, timedelta(hours=12)),
        ({"retention": ""}, None),
        ({}, None),
    ],
    ids=["days", "hours", "empty", "absent"],
)
def test_retention_is_a_duration_or_forever(
    tmp_path: Path, table: dict[str, Any], expected: timedelta | None
) -> None:
    assert retention_period(Settings(home=tmp_path, governance=table)) == expected


@pytest.mark.parametrize("value", ["90 days", "0d", "soon", 90], ids=str)
def test_a_wrong_retention_is_refused_naming_it(tmp_path: Path, value: object) -> None:
    with pytest.raises(InvalidInput, match=rf"retention .*{value!r}.*90d"):
        retention_period(Settings(home=tmp_path, governance={"retention": value}))


def test_older_rows_go_and_newer_rows_stay(home: Home, clock: Clock) -> None:
    log = make_log(home, clock)
    log_at(log, clock, DAY - timedelta(days=3), DAY - timedelta(days=3, hours=-1))
    log_at(log, clock, DAY + timedelta(hours=9))  # older than the cutoff, by its name
    straddling = [DAY + timedelta(hours=h) for h in (11, 11.9999, 12, 12.5)]
    log_at(log, clock, *straddling)
    log_at(log, clock, DAY + timedelta(hours=13))
    log_at(log, clock, DAY + timedelta(days=1, hours=1))
    before = {path: path.read_bytes() for path in files(home)}
    assert len(before) == 5

    assert purge_before(folder(home), CUTOFF, None) == Purged(segments=2, rows=5)

    kept = [CUTOFF, DAY + timedelta(hours=12.5), DAY + timedelta(hours=13)]
    kept.append(DAY + timedelta(days=1, hours=1))
    assert times(read_predictions(Home(home.root), "fraud")) == kept
    assert times(on_disk(files(home))) == kept
    assert not (folder(home) / "2025-03-07").exists()  # the old day went whole
    # The straddling segment kept its name; the newer ones were not even rewritten.
    rewritten = [path for path in files(home) if before.get(path) not in (None, path.read_bytes())]
    assert len(rewritten) == 1
    assert set(files(home)) <= set(before)
    assert purge_before(folder(home), CUTOFF, None) == Purged(0, 0)


def test_no_copy_is_left_in_segments_a_merged_one_covers(home: Home, clock: Clock) -> None:
    log = make_log(home, clock)
    for hours in (11, 11.5, 12.5):
        log_at(log, clock, DAY + timedelta(hours=hours))
    day = folder(home) / "2025-03-10"
    merge_segments(day, listing(day), None)  # a compaction killed before deleting
    assert len(files(home)) == 4

    assert purge_before(folder(home), CUTOFF, None).rows == 2

    assert times(on_disk(files(home))) == [DAY + timedelta(hours=12.5)]
    assert times(read_predictions(Home(home.root), "fraud")) == [DAY + timedelta(hours=12.5)]


def test_sealed_segments_are_purged_sealed(home: Home, clock: Clock) -> None:
    cipher = log_cipher(Settings(home=home.root, encryption_key=KEY), home)
    log = make_log(home, clock, cipher)
    log_at(log, clock, DAY - timedelta(days=1))
    log_at(log, clock, DAY + timedelta(hours=11), DAY + timedelta(hours=13))
    straddling = files(home)[-1]
    # Without the key: the old day still goes whole; the straddling segment is left as it is.
    assert purge_before(folder(home), CUTOFF, None) == Purged(1, 0)
    assert files(home) == [straddling]

    assert purge_before(folder(home), CUTOFF, cipher) == Purged(0, 1)
    assert files(home) == [straddling]
    assert straddling.name.endswith(".parquet.sealed")
    assert b"PAR1" not in straddling.read_bytes()
    assert times(read_predictions(Home(home.root), "fraud", cipher=cipher)) == [
        DAY + timedelta(hours=13)
    ]


def test_labels_older_than_the_cutoff_go(home: Home) -> None:
    labels = labels_folder(home, "fraud")

    def received(*moments: datetime) -> pa.Table:
        return pa.table(
            {
                "request_id": [moment.isoformat() for moment in moments],
                "row": pa.array([0] * len(moments), pa.int32()),
                "label": [1.0] * len(moments),
                "time": pa.array(list(moments), TIME),
            },
            schema=LABEL_SCHEMA,
        )

    write_segment(labels, received(DAY), None, DAY.timestamp())
    early, late = CUTOFF - timedelta(minutes=1), CUTOFF + timedelta(minutes=1)
    # A merged label segment is named when it was merged: it straddles the cutoff.
    write_segment(labels, received(early, late), None, late.timestamp())

    assert purge_before(labels, CUTOFF, None, lock=LOCK_NAME) == Purged(1, 2)
    assert read_labels(Home(home.root), "fraud")["request_id"].to_pylist() == [late.isoformat()]


def test_compactions_pause_while_a_purge_rewrites(home: Home, clock: Clock) -> None:
    log = make_log(home, clock)
    for hours in (11, 11.5):
        log_at(log, clock, DAY + timedelta(hours=hours))
    day = folder(home) / "2025-03-10"
    later = (DAY + timedelta(days=1)).timestamp()
    with exclusive_lock(folder(home)):
        assert compact_folder(day, None, now=later).removed == 0
    assert len(files(home)) == 2
    assert compact_folder(day, None, now=later).removed == 2
    assert len(files(home)) == 1


def test_a_purge_waits_for_a_compaction_then_gives_up(home: Home, clock: Clock) -> None:
    log_at(make_log(home, clock), clock, DAY)
    with compaction_lock(folder(home), REWRITE_LOCK, shared=True) as compacting:
        assert compacting
        with (
            pytest.raises(Unavailable, match="locked by a compaction"),
            exclusive_lock(folder(home), wait_s=0.2),
        ):
            pass


def test_a_live_writer_loses_nothing_newer_through_purges(home: Home) -> None:
    """A real writer thread (real clock, compacting all it wrote) logs while purges with a
    cutoff 50 ms back rewrite the segments it has just written: every row newer than the last
    cutoff is there after, and the writer shed nothing."""
    log = PredictionLog(
        home.root / "predictions", flush_s=0.01, compact_every_s=0.02, compact_age_s=0.0
    )
    done = threading.Event()
    sent: list[tuple[float, str]] = []  # a time before the row's own, request id

    async def write() -> None:
        await log.start()
        while not done.is_set():
            request = f"r{len(sent)}"
            sent.append((time.time(), request))
            log.append(VERSION, request, "p", 0.01, {"x": np.zeros((1, 1))}, ANSWER)
            await asyncio.sleep(0.001)
        await log.close()

    writer = threading.Thread(target=asyncio.run, args=(write(),))
    writer.start()
    removed = 0
    try:
        while len(sent) < 300:
            cutoff = datetime.now(UTC) - timedelta(milliseconds=50)
            removed += purge_before(folder(home), cutoff, None).rows
    finally:
        done.set()
        writer.join()
    assert removed  # the purges did rewrite or delete the writer's segments
    table = read_predictions(Home(home.root), "fraud", columns=["request_id"])
    newer = {request for moment, request in sent if moment >= cutoff.timestamp()}
    assert newer <= set(table["request_id"].to_pylist())
    assert table.num_rows + removed == len(sent)
    assert log.shed_rows == 0


def test_the_monitoring_jobs_purge_each_model_and_audit_it(
    home: Home, store: RegistryStore
) -> None:
    store.create_version(
        model="fraud",
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=SIGNATURE,
        lineage=LINEAGE,
    )
    now = datetime.now(UTC)
    clock = Clock(now)
    log = make_log(home, clock)
    log_at(log, clock, now - timedelta(days=10))
    log_at(log, clock, now - timedelta(hours=1))
    old_label = pa.table(
        {"request_id": ["gone"], "row": pa.array([0], pa.int32()), "label": [1.0]},
    ).append_column("time", pa.array([now - timedelta(days=5)], TIME))
    write_segment(labels_folder(home, "fraud"), old_label, None, old_label["time"][0].value / 1e6)
    report: dict[str, Any] = {
        "model": "fraud", "version": 1, "window": "24h", "rows": 2, "feature": "x",
        "method": "psi+ks", "score": 0.1, "p_value": 0.5, "drifted": False,
        "details": {"unseen_examples": []},
    }  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(
            insert(drift_reports),
            [
                {**report, "computed_at": now - timedelta(days=5)},
                {**report, "computed_at": now - timedelta(hours=1)},
            ],
        )
    settings = Settings(home=home.root)
    jobs = MonitorScheduler(home, store, settings, list, retention=timedelta(days=2))
    try:
        assert jobs.run_once()
    finally:
        jobs.close()

    left = read_predictions(Home(home.root), "fraud")
    assert left["request_id"].to_pylist() == [(now - timedelta(hours=1)).isoformat()]
    assert not read_labels(Home(home.root), "fraud").num_rows
    with store.engine.connect() as connection:
        reports = connection.execute(select(drift_reports.c.computed_at)).all()
        entries = connection.execute(select(audit_log).where(audit_log.c.action == "data.purge"))
        (entry,) = entries.all()
    assert len(reports) == 1
    assert entry.actor == "system:retention"
    assert (entry.model, entry.target) == ("fraud", "fraud")
    assert entry.details["segments"] == 1
    assert entry.details["rows"] == 1
    assert entry.details["labels"] == 1
    assert entry.details["drift_reports"] == 1
    cutoff = datetime.fromisoformat(entry.details["cutoff"])
    assert now - timedelta(days=2) <= cutoff < now - timedelta(days=2) + timedelta(minutes=1)

    # Nothing left to purge: no entry.
    again = MonitorScheduler(home, store, settings, list, retention=timedelta(days=2))
    try:
        assert again.run_once()
    finally:
        again.close()
    with store.engine.connect() as connection:
        count = connection.execute(select(audit_log).where(audit_log.c.action == "data.purge"))
        assert len(count.all()) == 1


@pytest.mark.e2e
def test_a_server_purges_its_home_past_the_retention(
    home: Home,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[governance]\nretention = "1h"\nprotected_aliases = []\n')
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config))
    monkeypatch.setenv("DOCKYARD_DRIFT_INTERVAL_S", "0.5")
    workspace = Workspace.open(load_settings({"home": home.root}))
    version = register(workspace, logistic, Registration("lr", reference_data=tabular_data[0]))
    workspace.store.engine.dispose()
    now = datetime.now(UTC)
    clock = Clock(now)
    log = make_log(home, clock)
    for moment in (now - timedelta(hours=3), now - timedelta(minutes=10)):
        clock.at(moment)
        x = tabular_data[0][:1]
        log.append(version, moment.isoformat(), "p", 0.01, {"x": x}, ANSWER)
        log.flush()

    start_server(home.root, "lr:1")

    def purged() -> list[Any]:
        with workspace.store.engine.connect() as connection:
            query = select(audit_log).where(audit_log.c.action == "data.purge")
            return list(connection.execute(query).all())

    deadline = time.monotonic() + 30
    while not purged():
        assert time.monotonic() < deadline, "no purge in 30 s"
        time.sleep(0.1)
    (entry,) = purged()
    assert entry.details["rows"] == 1
    kept = read_predictions(Home(home.root), "lr", columns=["request_id"])
    assert kept["request_id"].to_pylist() == [(now - timedelta(minutes=10)).isoformat()]


def test_serve_refuses_a_wrong_retention_in_one_line(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[governance]\nretention = "a while"\n')
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config))
    code, _, err = run_cli(capsys, "serve", "--home", str(home.root), "--port", "0")
    assert code == 2
    assert "retention" in err
    assert "'a while'" in err
