"""What ``/metrics`` shows, in the Prometheus text format: the workers' summed counts, the served
versions' facts (load time, artifact age, the metrics recorded at registration) and the newest
drift scores and live evaluations from the registry's tables.

Written with prometheus-client (metric families from a custom collector, ``generate_latest``), so
the format is the library's. This module is imported at the first scrape, not at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import Engine, func, select

from dockyard.errors import DockyardError
from dockyard.monitoring.metrics import (
    BATCH_BOUNDS,
    LATENCY_BOUNDS_S,
    LOG_SHED,
    LOG_WRITER_SECONDS,
    LOG_WRITTEN,
    Served,
    Snapshot,
    Stats,
)
from dockyard.registry.db import database_errors
from dockyard.registry.tables import drift_reports, evaluations

logger = logging.getLogger(__name__)

DATABASE_CACHE_S = 5.0
"""The drift and evaluation gauges are read from the registry at most this often."""


@dataclass(frozen=True)
class DatabaseGauges:
    """The newest rows of the monitoring tables for the served versions."""

    drift: list[tuple[str, str, str, str, float, bool]]
    """model, version, feature, method, score, drifted: the newest report of each version."""
    evaluations: list[tuple[str, str, str, str, float]]
    """model, version, metric, window, value: the newest value of each metric and window."""


NO_GAUGES = DatabaseGauges([], [])


class Scrape:
    """Renders ``/metrics`` for one worker; keeps the database's gauges ``DATABASE_CACHE_S``."""

    def __init__(
        self,
        served: Sequence[Served],
        engine: Engine | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._served = served
        self._engine = engine
        self._clock = clock
        self._gauges = NO_GAUGES
        self._read_at: float | None = None

    def render(self, totals: Snapshot) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self.families(totals)))
        return generate_latest(registry)

    def families(self, totals: Snapshot) -> list[Metric]:
        return [
            *_counts(totals),
            *self._versions(),
            *self._database(),
        ]

    def _versions(self) -> list[Metric]:
        """What the served versions are: load time, artifact age, registration metrics."""
        labels = ["model", "version"]
        load = GaugeMetricFamily(
            "dockyard_model_load_seconds",
            "Seconds the artifact took to load (read, verify, deserialize).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "dockyard_artifact_age_seconds",
            "Seconds since the served version was registered.",
            labels=labels,
        )
        registered = GaugeMetricFamily(
            "dockyard_registered_metric",
            "Metrics recorded with the version at registration (compare with live metrics).",
            labels=[*labels, "metric"],
        )
        now = datetime.now(UTC)
        for served in self._served:
            version = served.version
            values = [version.model, str(version.version)]
            load.add_metric(values, served.load_seconds)
            if version.created_at is not None:
                age.add_metric(values, (now - version.created_at).total_seconds())
            for metric, value in version.metrics.items():
                registered.add_metric([*values, metric], float(value))
        return [load, age, registered]

    def _database(self) -> list[Metric]:
        gauges = self._database_gauges()
        drift = GaugeMetricFamily(
            "dockyard_drift_score",
            "Drift score of each feature and output in the newest drift report (PSI, KS "
            "statistic or chi-square, per method).",
            labels=["model", "version", "feature", "method"],
        )
        drifted = GaugeMetricFamily(
            "dockyard_drift_detected",
            "1 where the newest drift report flags the feature or output as drifted, else 0.",
            labels=["model", "version", "feature"],
        )
        for model, version, feature, method, score, flagged in gauges.drift:
            drift.add_metric([model, version, feature, method], score)
            drifted.add_metric([model, version, feature], 1.0 if flagged else 0.0)
        live = GaugeMetricFamily(
            "dockyard_live_metric",
            "Newest accuracy or error metric of the version on its labelled live traffic.",
            labels=["model", "version", "metric", "window"],
        )
        for model, version, metric, window, value in gauges.evaluations:
            live.add_metric([model, version, metric, window], value)
        return [drift, drifted, live]

    def _database_gauges(self) -> DatabaseGauges:
        if self._engine is None or not self._served:
            return NO_GAUGES
        now = self._clock()
        if self._read_at is not None and now - self._read_at < DATABASE_CACHE_S:
            return self._gauges
        self._read_at = now
        try:
            with database_errors(self._engine, "read"):
                self._gauges = _read_gauges(self._engine, self._served)
        except DockyardError as exc:
            logger.warning("metrics without drift and evaluations: %s", exc.message)
            self._gauges = NO_GAUGES
        return self._gauges


class _Families:
    """A collector of metric families built already."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _counts(totals: Snapshot) -> list[Metric]:
    """The workers' counts and gauges."""
    requests = CounterMetricFamily(
        "dockyard_requests",
        "Inference requests answered, by model, version, route and status.",
        labels=["model", "version", "route", "status"],
    )
    latency = HistogramMetricFamily(
        "dockyard_request_duration_seconds",
        "Seconds from an inference request's arrival to its answer.",
        labels=["model", "version", "route"],
    )
    by_route: dict[tuple[str, str, str], Stats] = {}
    for (model, version, route, status), stats in sorted(totals.requests.items(), key=_order):
        shown = "" if version is None else str(version)
        requests.add_metric([model, shown, route, str(status)], stats[0])
        summed = by_route.setdefault((model, shown, route), [0] * len(stats))
        for index, value in enumerate(stats):
            summed[index] += value
    for labels, stats in by_route.items():
        latency.add_metric(list(labels), _buckets(stats, LATENCY_BOUNDS_S), stats[1])
    batches = HistogramMetricFamily(
        "dockyard_batch_rows",
        "Rows in each batch handed to the model.",
        labels=["model", "version"],
    )
    for (model, version), stats in sorted(totals.batches.items()):
        batches.add_metric([model, str(version)], _buckets(stats, BATCH_BOUNDS), stats[1])
    queued = GaugeMetricFamily(
        "dockyard_queue_depth",
        "Requests waiting for a batch, summed over the live workers.",
        labels=["model", "version"],
    )
    in_flight = GaugeMetricFamily(
        "dockyard_in_flight_rows",
        "Rows handed to the batcher and not yet answered, summed over the live workers.",
        labels=["model", "version"],
    )
    for (model, version), (waiting, flying) in sorted(totals.gauges.items()):
        queued.add_metric([model, str(version)], waiting)
        in_flight.add_metric([model, str(version)], flying)
    errors = CounterMetricFamily(
        "dockyard_errors",
        "Inference requests answered with an error, by model and error kind.",
        labels=["model", "kind"],
    )
    for (model, kind), count in sorted(totals.errors.items()):
        errors.add_metric([model, kind], count)
    security = CounterMetricFamily(
        "dockyard_security_events",
        "Security events (refused credentials, forbidden calls, rate limits, rate anomalies).",
        labels=["kind"],
    )
    for kind, count in sorted(totals.security.items()):
        security.add_metric([kind], count)
    return [requests, latency, batches, queued, in_flight, errors, security, *_log(totals)]


def _log(totals: Snapshot) -> list[Metric]:
    """The prediction log's counts (none with the log off on every worker)."""
    if not totals.log:
        return []
    rows = CounterMetricFamily(
        "dockyard_prediction_log_rows",
        "Rows of answered requests the prediction log wrote, or shed (its queue full, or "
        "writing failed).",
        labels=["outcome"],
    )
    for outcome in (LOG_WRITTEN, LOG_SHED):
        rows.add_metric([outcome], totals.log.get(outcome, 0))
    writer = CounterMetricFamily(
        "dockyard_prediction_log_writer_cpu_seconds",
        "CPU seconds the workers' prediction log writers spent building, writing and merging "
        "segments.",
        value=totals.log.get(LOG_WRITER_SECONDS, 0.0),
    )
    pending = GaugeMetricFamily(
        "dockyard_prediction_log_pending_rows",
        "Rows queued for the prediction log and not yet written, summed over the live workers.",
        value=totals.log_pending,
    )
    return [rows, writer, pending]


def _order(item: tuple[tuple[str, int | None, str, int], Stats]) -> tuple[str, int, str, int]:
    (model, version, route, status), _ = item
    return (model, -1 if version is None else version, route, status)


def _buckets(stats: Stats, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram, +Inf last (equal to its count)."""
    pairs = []
    cumulative = 0.0
    for bound, count in zip((*(str(b) for b in bounds), "+Inf"), stats[2:], strict=True):
        cumulative += count
        pairs.append((bound, cumulative))
    return pairs


def _read_gauges(engine: Engine, served: Sequence[Served]) -> DatabaseGauges:
    """The newest drift report and the newest value of each live metric, per served version."""
    drift: list[tuple[str, str, str, str, float, bool]] = []
    latest_evaluations: list[tuple[str, str, str, str, float]] = []
    newer = evaluations.alias("newer")
    with engine.connect() as connection:
        for version in {(s.version.model, s.version.version) for s in served}:
            model, number = version
            shown = str(number)
            report = drift_reports.c
            newest = (
                select(func.max(report.computed_at))
                .where(report.model == model, report.version == number)
                .scalar_subquery()
            )
            rows = connection.execute(
                select(report.feature, report.method, report.score, report.drifted)
                .where(report.model == model, report.version == number)
                .where(report.computed_at == newest)
                .order_by(report.feature)
            )
            drift += [
                (model, shown, row.feature, row.method, row.score, row.drifted) for row in rows
            ]
            row_of = evaluations.c
            latest = (
                select(func.max(newer.c.computed_at))
                .where(
                    newer.c.model == row_of.model,
                    newer.c.version == row_of.version,
                    newer.c.metric == row_of.metric,
                    newer.c.window == row_of.window,
                )
                .scalar_subquery()
            )
            values = connection.execute(
                select(row_of.metric, row_of.window, row_of.value)
                .where(row_of.model == model, row_of.version == number)
                .where(row_of.computed_at == latest)
                .order_by(row_of.metric, row_of.window, row_of.id)
            )
            newest_value = {(row.metric, row.window): row.value for row in values}
            latest_evaluations += [
                (model, shown, metric, window, value)
                for (metric, window), value in newest_value.items()
            ]
    return DatabaseGauges(sorted(drift), sorted(latest_evaluations))
