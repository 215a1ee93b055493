"""What the dashboard shows, as one JSON-able dict: the models with their versions and aliases,
traffic and latency over the window (from the prediction log), drift per feature over time (from
``drift_reports``), accuracy over time (from ``evaluations``), the open alerts, and, from the
request metrics, each model's answers by status and errors by kind since the server started (the
log holds only answered requests).

Assembled on request from what the other parts stored, so the dashboard keeps no state of its own
and shows the same numbers as the CLI. The work is bounded by the window: only its log segments,
only three of their columns, and capped row counts (the newest kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, Select, select

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.home import Home
from dockyard.monitoring.alerts import list_alerts
from dockyard.monitoring.metrics import Snapshot
from dockyard.monitoring.predlog import log_cipher, read_predictions
from dockyard.registry.records import Model, ModelVersion
from dockyard.registry.store import RegistryStore, utc_now
from dockyard.registry.tables import drift_reports, evaluations
from dockyard.security.keystore import parse_duration

MAX_WINDOW = timedelta(days=31)
MAX_BUCKETS = 1440
BUCKET_STEPS_S = (60, 300, 900, 3600, 6 * 3600, 86400)
"""Traffic is counted per minute, or per the first of these steps that keeps a window within
``MAX_BUCKETS`` buckets (a day per minute, a month per hour)."""
LOG_COLUMNS = ("row", "time", "latency_ms")
"""All the traffic charts need: a request is its row 0 (one log row per predicted row)."""
TRAFFIC_ROWS_LIMIT = 2_000_000
"""The most log rows read for one model's charts, the newest (measured: about 2 s and 170 MB at
the peak for 2,000,000 rows of 200 segments)."""
QUANTILES = (0.5, 0.99)
DRIFT_ROWS_LIMIT = 100_000
EVALUATION_ROWS_LIMIT = 50_000
ALERTS_LIMIT = 1000
DIGITS = 6
"""Scores and values are rounded to this many significant digits: the page draws them."""


def parse_window(text: str) -> timedelta:
    """``since`` as a window length: a duration (``15m``, ``24h``, ``7d``) of at most 31 days."""
    try:
        window = parse_duration(text)
    except InvalidInput:
        window = None
    if window is None or not timedelta(0) < window <= MAX_WINDOW:
        raise InvalidInput(f"since={text[:40]!r}: give a window from 1s to 31d, such as 1h or 24h")
    return window


def bucket_seconds(window: timedelta) -> int:
    """The traffic charts' step for ``window`` (see ``BUCKET_STEPS_S``)."""
    total = window.total_seconds()
    return next(
        (step for step in BUCKET_STEPS_S if total / step <= MAX_BUCKETS), BUCKET_STEPS_S[-1]
    )


def overview(
    home: Home,
    store: RegistryStore,
    settings: Settings,
    since: str,
    visible: Callable[[str], bool],
    totals: Snapshot | None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the dashboard draws for the window ``since`` (such as ``24h``) ending ``now``,
    for the models ``visible`` says the caller may see (alerts of no model are shown to all).
    ``totals``: the server's request metrics summed over its workers (None: metrics off)."""
    window = parse_window(since)
    end = now or utc_now()
    start = end - window
    step = bucket_seconds(window)
    registered = [model for model in store.list_models() if visible(model.name)]
    names = [model.name for model in registered]
    drift = _drift(store.engine, names, start)
    scores = _evaluations(store.engine, names, start)
    models = []
    for model in registered:
        versions = store.list_versions(model.name)
        models.append(
            {
                **_model(model, versions),
                "traffic": _traffic(home, settings, model.name, start, end, step)
                if settings.prediction_log
                else None,
                "answered": None if totals is None else _answered(totals, model.name),
                "drift": drift.get(model.name, []),
                "evaluations": _with_registered(scores.get(model.name, []), versions),
            }
        )
    return {
        "generated_at": end.isoformat(),
        "since": since,
        "start": start.timestamp(),
        "end": end.timestamp(),
        "bucket_s": step,
        "prediction_log": settings.prediction_log,
        "metrics": totals is not None,
        "thresholds": {"psi": settings.drift_psi_threshold, "p_value": settings.drift_pvalue},
        "models": models,
        "alerts": [
            alert.to_dict()
            for alert in list_alerts(store.engine, limit=ALERTS_LIMIT)
            if alert.model is None or visible(alert.model)
        ],
    }


def _model(model: Model, versions: Sequence[ModelVersion]) -> dict[str, Any]:
    return {
        "name": model.name,
        "description": model.description,
        "latest_version": model.latest_version,
        "aliases": dict(model.aliases),
        "versions": [
            {
                "version": version.version,
                "framework": version.framework,
                "created_at": version.created_at.isoformat() if version.created_at else None,
                "archived": version.archived,
                "aliases": list(version.aliases),
                "metrics": dict(version.metrics),
            }
            for version in versions
        ],
    }


def _traffic(
    home: Home, settings: Settings, model: str, start: datetime, end: datetime, step: int
) -> dict[str, Any]:
    """Requests, rows and latency percentiles per ``step`` seconds, from the log's three columns
    (buckets without traffic are left out: the page draws them as no requests, no latency).

    At most ``TRAFFIC_ROWS_LIMIT`` rows are read, the newest: past that, ``complete`` is false
    and ``from`` says where the counted traffic starts. ``sample`` is the share of requests the
    log keeps (the counts are of logged requests)."""
    table = read_predictions(
        home,
        model,
        since=start,
        until=end,
        columns=list(LOG_COLUMNS),
        cipher=log_cipher(settings, home),
        limit=TRAFFIC_ROWS_LIMIT,
    )
    complete = table.num_rows < TRAFFIC_ROWS_LIMIT
    micros = pc.cast(pc.cast(table["time"], pa.timestamp("us", "UTC")), pa.int64())
    first = pc.equal(table["row"], 0)
    latency = pc.if_else(first, pc.cast(table["latency_ms"], pa.float64()), None)
    buckets = (
        pa.table({"t": pc.multiply(pc.divide(micros, step * 1_000_000), step), "first": first})
        .append_column("latency", latency)
        .group_by("t")
        .aggregate(
            [
                ("first", "count"),
                ("latency", "count"),
                ("latency", "tdigest", pc.TDigestOptions(q=list(QUANTILES))),
            ]
        )
        .sort_by("t")
    )
    quantiles = [q or [None, None] for q in buckets["latency_tdigest"].to_pylist()]
    p50, p99 = pc.tdigest(latency, q=list(QUANTILES)).to_pylist()
    return {
        "sample": settings.model_options(model).log_sample,
        "complete": complete,
        "from": None if complete else table["time"][0].as_py().timestamp(),
        "requests": pc.sum(first).as_py() or 0,
        "rows": table.num_rows,
        "p50_ms": _round(p50),
        "p99_ms": _round(p99),
        "series": {
            "t": buckets["t"].to_pylist(),
            "requests": buckets["latency_count"].to_pylist(),
            "rows": buckets["first_count"].to_pylist(),
            "p50_ms": [_round(q[0]) for q in quantiles],
            "p99_ms": [_round(q[1]) for q in quantiles],
        },
    }


def _answered(totals: Snapshot, model: str) -> dict[str, Any]:
    """``model``'s requests since the server started, by HTTP status, and its errors by kind:
    the metrics count every request, the log only those answered (and sampled)."""
    statuses: dict[str, int] = {}
    for (name, _, _, status), stats in totals.requests.items():
        if name == model:
            statuses[str(status)] = statuses.get(str(status), 0) + int(stats[0])
    return {
        "requests": sum(statuses.values()),
        "failed": sum(count for status, count in statuses.items() if int(status) >= 400),
        "statuses": dict(sorted(statuses.items())),
        "errors": {
            kind: count for (name, kind), count in sorted(totals.errors.items()) if name == model
        },
    }


def _newest(engine: Engine, query: Select[Any], at: Any, limit: int) -> list[Any]:
    """The newest ``limit`` rows of ``query`` (ordered by ``at``), oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(at.desc()).limit(limit)).all()
    return list(reversed(rows))


def _drift(engine: Engine, models: list[str], start: datetime) -> dict[str, list[dict[str, Any]]]:
    """Per model, one entry per feature (and output): its scores over time and its latest report."""
    query = select(drift_reports).where(
        drift_reports.c.model.in_(models), drift_reports.c.computed_at >= start
    )
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for row in _newest(engine, query, drift_reports.c.computed_at, DRIFT_ROWS_LIMIT):
        feature = found.setdefault(row.model, {}).setdefault(
            row.feature, {"feature": row.feature, "t": [], "score": [], "drifted": []}
        )
        feature["t"].append(row.computed_at.timestamp())
        feature["score"].append(_round(row.score))
        feature["drifted"].append(row.drifted)
        feature["method"] = row.method
        feature["latest"] = {
            "version": row.version,
            "computed_at": row.computed_at.isoformat(),
            "window": row.window,
            "rows": row.rows,
            "score": _round(row.score),
            "p_value": _round(row.p_value),
            "drifted": row.drifted,
            "details": row.details,
        }
    return {
        model: sorted(features.values(), key=lambda f: (not f["latest"]["drifted"], f["feature"]))
        for model, features in found.items()
    }


def _evaluations(
    engine: Engine, models: list[str], start: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Per model, one series per metric and version: its value over time."""
    query = select(evaluations).where(
        evaluations.c.model.in_(models), evaluations.c.computed_at >= start
    )
    found: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for row in _newest(engine, query, evaluations.c.computed_at, EVALUATION_ROWS_LIMIT):
        series = found.setdefault(row.model, {}).setdefault(
            (row.metric, row.version),
            {"metric": row.metric, "version": row.version, "t": [], "value": [], "rows": []},
        )
        series["t"].append(row.computed_at.timestamp())
        series["value"].append(_round(row.value))
        series["rows"].append(row.rows)
    return {
        model: [entry for _, entry in sorted(series.items())] for model, series in found.items()
    }


def _with_registered(
    series: list[dict[str, Any]], versions: Iterable[ModelVersion]
) -> list[dict[str, Any]]:
    """Each series with the value its version recorded for the metric at registration (or
    None), for the page to draw beside the live one."""
    recorded = {version.version: version.metrics for version in versions}
    return [
        {**entry, "registered": _round(recorded.get(entry["version"], {}).get(entry["metric"]))}
        for entry in series
    ]


def _round(value: float | None) -> float | None:
    """``value`` to ``DIGITS`` significant digits; None for none, NaN or infinity (not JSON)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{DIGITS}g}")
