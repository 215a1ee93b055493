"""A worker's metrics in process: counted per request, written to the server's metrics folder,
summed over the workers' files (a dead worker's counts kept, its gauges not), and shown in the
Prometheus text format with the registry's newest drift and evaluation rows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert

from dockyard.monitoring.exposition import DATABASE_CACHE_S, Scrape
from dockyard.monitoring.metrics import (
    FLUSH_S,
    UNSERVED,
    Served,
    Snapshot,
    WorkerMetrics,
    read_totals,
)
from dockyard.monitoring.monitor import Monitor
from dockyard.monitoring.predlog import PredictionLog
from dockyard.registry.records import ArtifactRef, ModelVersion
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import drift_reports, evaluations
from dockyard.security.events import AUTH_FAILED, FORBIDDEN, EventLog, SecurityEvent
from dockyard.serving.batching import Batcher
from registry.conftest import (  # noqa: F401 (the registry tests' database fixtures)
    DIGEST,
    LINEAGE,
    SIGNATURE,
    database_url,
    postgres_admin,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def _predict(x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"y": np.asarray(x).sum(axis=1)}


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:  # noqa: F811
    registry = RegistryStore.open(database_url)
    yield registry
    registry.close()


@pytest.fixture
def served(store: RegistryStore) -> ModelVersion:
    """fraud version 1 in the registry, with an accuracy recorded at registration."""
    return _register(store, metrics={"accuracy": 0.93})


@pytest.fixture
def batcher() -> Iterator[Batcher]:
    batcher = Batcher(_predict, name="fraud:1")
    yield batcher
    batcher.close()


def test_each_request_is_counted_by_model_version_route_and_status(tmp_path: Path) -> None:
    metrics = WorkerMetrics(tmp_path / "metrics")
    fraud = _version("fraud", 1)
    metrics.watch(Served(fraud, 0.5), _Idle())
    for seconds in (0.0002, 0.003, 0.003):
        metrics.request("v2", "fraud", 1, 200, seconds, None)
    metrics.request("v1", "fraud", 1, 400, 0.001, "InvalidInput")
    metrics.request("v2", "made-up-by-a-client", None, 404, 0.0001, "NotFound")

    snapshot = metrics.snapshot()

    ok = snapshot.requests[("fraud", 1, "v2", 200)]
    assert ok[0] == 3
    assert ok[1] == pytest.approx(0.0062)
    assert ok[2] == 1  # <= 0.25 ms
    assert ok[2 + 4] == 2  # <= 5 ms (0.25, 0.5, 1, 2.5, 5)
    assert snapshot.requests[("fraud", 1, "v1", 400)][0] == 1
    # A name the server does not serve is the client's to choose: it gets no series of its own.
    assert snapshot.requests[(UNSERVED, None, "v2", 404)][0] == 1
    assert snapshot.errors == {("fraud", "InvalidInput"): 1, (UNSERVED, "NotFound"): 1}


async def test_batch_sizes_and_queue_gauges_come_from_the_batcher(
    tmp_path: Path, batcher: Batcher
) -> None:
    metrics = WorkerMetrics(tmp_path / "metrics")
    metrics.watch(Served(_version("fraud", 1), 0.5), batcher)

    await batcher.submit(np.ones((3, 2)), ())
    await asyncio.gather(*(batcher.submit(np.ones((1, 2)), ()) for _ in range(5)))

    batches = metrics.snapshot().batches[("fraud", 1)]
    assert batches[0] == batcher.batches_run
    assert batches[1] == 3 + 5
    assert metrics.snapshot().gauges == {("fraud", 1): (0, 0)}


async def test_counts_are_written_every_interval_and_on_close(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    metrics = WorkerMetrics(folder)
    await metrics.start()
    try:
        metrics.request("v2", UNSERVED, None, 404, 0.001, "NotFound")
        await asyncio.sleep(FLUSH_S * 1.5)
        assert read_totals(folder).requests[(UNSERVED, None, "v2", 404)][0] == 1
        metrics.request("v2", UNSERVED, None, 404, 0.001, "NotFound")
    finally:
        await metrics.close()
    assert read_totals(folder).requests[(UNSERVED, None, "v2", 404)][0] == 2
    assert len(list(folder.glob("*.json"))) == 1


def test_totals_add_every_workers_file_and_keep_a_dead_workers_counts(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    _run_a_worker_that_exits(folder, requests=7, queued=3)
    alive = WorkerMetrics(folder)
    alive.watch(Served(_version("fraud", 1), 0.5), _Idle(queued=2))
    alive.request("v2", "fraud", 1, 200, 0.001, None)
    alive.security_event(AUTH_FAILED)

    totals = asyncio.run(alive.totals())

    assert totals.requests[("fraud", 1, "v2", 200)][0] == 7 + 1
    assert totals.errors == {}
    assert totals.security == {AUTH_FAILED: 1 + 2}
    # The dead worker's last gauges no longer describe anything: only the live one's count.
    assert totals.gauges == {("fraud", 1): (2, 0)}
    assert len(list(folder.glob("*.json"))) == 2


def test_the_prediction_logs_rows_written_shed_and_waiting_are_counted_and_shown(
    tmp_path: Path,
) -> None:
    """What each worker's log wrote and shed adds up over the workers' files; the rows waiting
    count only while their worker is alive; the exposition shows all three and the writer's CPU
    seconds."""
    folder = tmp_path / "metrics"
    log = PredictionLog(tmp_path / "predictions", queue_rows=5, compact_every_s=None)
    metrics = WorkerMetrics(folder)
    Monitor(metrics, log)  # the monitor has the metrics read the log
    version = _version("fraud", 1)
    for index in range(4):  # two rows each: the third and fourth do not fit
        rows = np.arange(4.0).reshape(2, 2) + index
        log.append(version, f"r{index}", "p", 0.001, {"input-0": rows}, {"y": rows[:, 0]})
    before = metrics.snapshot()
    assert before.log == {"written": 0, "shed": 4, "writer_seconds": 0.0}
    assert before.log_pending == 4
    assert log.flush() == 4
    after = Snapshot.from_bytes(metrics.snapshot().to_bytes())
    assert after.log["written"] == 4
    assert after.log["shed"] == 4
    assert after.log["writer_seconds"] > 0
    assert after.log_pending == 0

    totals = Snapshot()
    totals.add(before, gauges=False)  # a dead worker's: its rows waiting are gone with it
    totals.add(after, gauges=True)
    assert totals.log["written"] == 4
    assert totals.log["shed"] == 8
    assert totals.log_pending == 0
    totals.add(before, gauges=True)
    assert totals.log_pending == 4
    samples = _samples(Scrape([], None).render(totals).decode())
    assert _named(samples, "dockyard_prediction_log_rows_total") == {
        frozenset({("outcome", "written")}): 4,
        frozenset({("outcome", "shed")}): 12,
    }
    assert _value(samples, "dockyard_prediction_log_pending_rows") == 4
    assert _value(samples, "dockyard_prediction_log_writer_cpu_seconds_total") > 0
    # With the log off, none of its series.
    off = _samples(Scrape([], None).render(Snapshot()).decode())
    assert not any(name.startswith("dockyard_prediction_log") for name, _ in off)


def test_a_file_that_is_not_a_snapshot_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "metrics"
    metrics = WorkerMetrics(folder)
    metrics.request("v2", UNSERVED, None, 404, 0.001, "NotFound")
    folder.mkdir()
    (folder / "1-0.json").write_bytes(b'{"requests": 3}')

    totals = asyncio.run(metrics.totals())

    assert totals.requests[(UNSERVED, None, "v2", 404)][0] == 1
    assert "skipping metrics file 1-0.json" in caplog.text
    with pytest.raises(ValueError, match="not a metrics snapshot"):
        Snapshot.from_bytes(b"\x00garbage")


def test_security_events_are_counted_by_kind_before_coalescing(
    tmp_path: Path, store: RegistryStore
) -> None:
    metrics = WorkerMetrics(tmp_path / "metrics")
    events = EventLog(store.engine)
    events.listener = metrics.security_event
    for kind in (AUTH_FAILED, AUTH_FAILED, AUTH_FAILED, FORBIDDEN):
        events.record(SecurityEvent(kind, "", "", "POST", "/v2", 401, "10.0.0.1:5", "no key"))

    assert metrics.snapshot().security == {AUTH_FAILED: 3, FORBIDDEN: 1}
    assert events.flush() == 2  # alike events are still one row each in the table


def test_the_exposition_shows_counts_histograms_and_the_served_versions(
    served: ModelVersion, tmp_path: Path
) -> None:
    metrics = WorkerMetrics(tmp_path / "metrics")
    metrics.watch(Served(served, 0.25), _Idle(queued=4, in_flight=9))
    for seconds in (0.0002, 0.003, 0.003, 20.0):
        metrics.request("v2", "fraud", served.version, 200, seconds, None)
    metrics.request("v2", "fraud", served.version, 429, 0.0001, "RateLimited")
    metrics.security_event(AUTH_FAILED)

    samples = _samples(asyncio.run(metrics.exposition()).decode())

    labels = {"model": "fraud", "version": str(served.version), "route": "v2"}
    assert _value(samples, "dockyard_requests_total", **labels, status="200") == 4
    assert _value(samples, "dockyard_requests_total", **labels, status="429") == 1
    assert _value(samples, "dockyard_request_duration_seconds_count", **labels) == 5
    assert _value(samples, "dockyard_request_duration_seconds_sum", **labels) == pytest.approx(
        20.0063
    )
    assert _value(samples, "dockyard_request_duration_seconds_bucket", **labels, le="0.00025") == 2
    assert _value(samples, "dockyard_request_duration_seconds_bucket", **labels, le="0.005") == 4
    assert _value(samples, "dockyard_request_duration_seconds_bucket", **labels, le="10.0") == 4
    assert _value(samples, "dockyard_request_duration_seconds_bucket", **labels, le="+Inf") == 5
    assert _value(samples, "dockyard_errors_total", model="fraud", kind="RateLimited") == 1
    assert _value(samples, "dockyard_security_events_total", kind=AUTH_FAILED) == 1
    version = {"model": "fraud", "version": str(served.version)}
    assert _value(samples, "dockyard_queue_depth", **version) == 4
    assert _value(samples, "dockyard_in_flight_rows", **version) == 9
    assert _value(samples, "dockyard_model_load_seconds", **version) == 0.25
    assert _value(samples, "dockyard_registered_metric", **version, metric="accuracy") == 0.93
    assert served.created_at is not None
    age = (datetime.now(UTC) - served.created_at).total_seconds()
    assert _value(samples, "dockyard_artifact_age_seconds", **version) == pytest.approx(age, abs=5)


def test_drift_and_live_metrics_are_the_newest_rows_of_the_served_versions(
    served: ModelVersion, store: RegistryStore
) -> None:
    other = _register(store)  # version 2: not served here
    now = datetime.now(UTC)
    clock = _Clock()
    scrape = Scrape([Served(served, 0.1)], store.engine, clock)

    empty = _samples(scrape.render(Snapshot()).decode())
    assert _named(empty, "dockyard_drift_score") == {}
    assert _named(empty, "dockyard_live_metric") == {}

    older, newer = now - timedelta(minutes=2), now - timedelta(minutes=1)
    _insert_drift(store, served, older, {"amount": (0.9, True), "country": (0.8, True)})
    _insert_drift(store, served, newer, {"amount": (0.05, False), "country": (0.31, True)})
    _insert_drift(store, other, now, {"amount": (7.0, True)})
    # Written out of order (the newest first): the time says which is newest, not the row id.
    _insert_evaluation(store, served, newer, "24h", {"accuracy": 0.88})
    _insert_evaluation(store, served, older, "24h", {"accuracy": 0.5, "f1": 0.4})
    _insert_evaluation(store, served, newer, "1h", {"accuracy": 0.8})
    _insert_evaluation(store, other, now, "24h", {"accuracy": 0.1})

    cached = _samples(scrape.render(Snapshot()).decode())
    assert _named(cached, "dockyard_drift_score") == {}  # read a moment ago: kept a few seconds
    clock.now += DATABASE_CACHE_S
    samples = _samples(scrape.render(Snapshot()).decode())

    version = {"model": "fraud", "version": str(served.version)}
    assert _named(samples, "dockyard_drift_score") == {
        frozenset({**version, "feature": "amount", "method": "psi"}.items()): 0.05,
        frozenset({**version, "feature": "country", "method": "psi"}.items()): 0.31,
    }
    assert _named(samples, "dockyard_drift_detected") == {
        frozenset({**version, "feature": "amount"}.items()): 0.0,
        frozenset({**version, "feature": "country"}.items()): 1.0,
    }
    assert _named(samples, "dockyard_live_metric") == {
        frozenset({**version, "metric": "accuracy", "window": "24h"}.items()): 0.88,
        frozenset({**version, "metric": "accuracy", "window": "1h"}.items()): 0.8,
        frozenset({**version, "metric": "f1", "window": "24h"}.items()): 0.4,
    }


def test_a_registry_that_cannot_be_read_leaves_out_only_its_gauges(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'dockyard.db'}")
    scrape = Scrape([Served(_version("fraud", 1), 0.1)], unreachable)

    samples = _samples(scrape.render(Snapshot()).decode())

    assert _named(samples, "dockyard_drift_score") == {}
    assert _named(samples, "dockyard_model_load_seconds")
    assert "metrics without drift and evaluations: cannot read registry database" in caplog.text


class _Idle:
    """A batcher's gauges, fixed (the real one's are checked with a real Batcher above)."""

    def __init__(self, queued: int = 0, in_flight: int = 0) -> None:
        self.on_batch: Callable[[int], object] | None = None
        self.queue_depth = queued
        self.in_flight = in_flight


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _register(store: RegistryStore, **values: Any) -> ModelVersion:
    artifact = ArtifactRef(DIGEST, "skops")
    return store.create_version(
        model="fraud",
        framework="sklearn",
        artifact=artifact,
        signature=SIGNATURE,
        lineage=LINEAGE,
        **values,
    )


def _version(model: str, number: int) -> ModelVersion:
    return ModelVersion(model, number, "sklearn", ArtifactRef(DIGEST, "skops"), SIGNATURE, LINEAGE)


def _run_a_worker_that_exits(folder: Path, requests: int, queued: int) -> None:
    """A real process that counts as a worker would, writes its file on close and exits."""
    code = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from dockyard.monitoring.metrics import Served, WorkerMetrics
        from dockyard.registry.records import ArtifactRef, ModelVersion
        from registry.conftest import DIGEST, LINEAGE, SIGNATURE

        class Queue:
            on_batch = None
            queue_depth = {queued}
            in_flight = 1

        async def main():
            metrics = WorkerMetrics(Path({str(folder)!r}))
            fraud = ModelVersion(
                "fraud", 1, "sklearn", ArtifactRef(DIGEST, "skops"), SIGNATURE, LINEAGE
            )
            metrics.watch(Served(fraud, 0.5), Queue())
            await metrics.start()
            for _ in range({requests}):
                metrics.request("v2", "fraud", 1, 200, 0.002, None)
            metrics.security_event("auth_failed")
            metrics.security_event("auth_failed")
            await metrics.close()

        asyncio.run(main())
        """
    )
    tests = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tests)


def _insert_drift(
    store: RegistryStore,
    version: ModelVersion,
    at: datetime,
    features: dict[str, tuple[float, bool]],
) -> None:
    rows = [
        {
            "model": version.model,
            "version": version.version,
            "computed_at": at,
            "window": "24h",
            "rows": 1000,
            "feature": feature,
            "method": "psi",
            "score": score,
            "p_value": None,
            "drifted": drifted,
            "details": {},
        }
        for feature, (score, drifted) in features.items()
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(drift_reports), rows)


def _insert_evaluation(
    store: RegistryStore,
    version: ModelVersion,
    at: datetime,
    window: str,
    values: dict[str, float],
) -> None:
    rows = [
        {
            "model": version.model,
            "version": version.version,
            "computed_at": at,
            "window": window,
            "metric": metric,
            "value": value,
            "rows": 500,
        }
        for metric, value in values.items()
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(evaluations), rows)
