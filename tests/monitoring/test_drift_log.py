"""Drift over the real prediction log: rows written by ``PredictionLog`` (plain and sealed), the
window read by time and by count for one version, reports stored in ``drift_reports`` on each
database backend, and the server's periodic job."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select

from dockyard.config import load_settings
from dockyard.errors import Conflict
from dockyard.monitoring import drift
from dockyard.monitoring.drift import (
    Thresholds,
    Window,
    compute_drift,
    drift_now,
    latest_drift,
    read_window,
    run_drift_once,
)
from dockyard.monitoring.predlog import PREDICTIONS, PredictionLog, log_cipher
from dockyard.registry.records import ModelVersion
from dockyard.registry.tables import drift_reports
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from registry.conftest import database_url, postgres_admin  # noqa: F401 (fixtures)

FEATURES = 30


@pytest.fixture
def now() -> datetime:
    """The test's own moment: the window under test ends at the real clock, so a moment taken
    when the module was imported grows stale over a long run."""
    return datetime.now(UTC)


@pytest.fixture
def workspace_on(home: Path, database_url: str) -> Iterator[Workspace]:  # noqa: F811
    workspace = Workspace.open(load_settings({"home": home, "database_url": database_url}, env={}))
    yield workspace
    workspace.store.close()


@pytest.fixture
def lr(
    workspace_on: Workspace,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> ModelVersion:
    """``lr`` version 1, its profile taken from 600 rows of 30 standard normal features."""
    return register(workspace_on, logistic, Registration("lr", reference_data=tabular_data[0]))


def log_traffic(
    workspace: Workspace,
    version: ModelVersion,
    model: LogisticRegression,
    batches: list[tuple[datetime, np.ndarray]],
    **options: Any,
) -> None:
    """Log requests as the server does: each batch of rows one request at its time."""
    moments = iter([moment.timestamp() for moment, _ in batches])
    log = PredictionLog(workspace.home.root / PREDICTIONS, clock=lambda: next(moments), **options)
    for index, (_, rows) in enumerate(batches):
        outputs = {"predict": model.predict(rows), "predict_proba": model.predict_proba(rows)}
        log.append(version, f"request-{index}", "tester", 0.001, {"input": rows}, outputs)
    log.flush()


def shifted(rng: np.random.Generator, rows: int, columns: tuple[int, ...]) -> np.ndarray:
    x = rng.normal(size=(rows, FEATURES))
    x[:, list(columns)] += 3.0
    return x


def test_the_window_is_the_versions_newest_rows_by_time_or_by_count(
    workspace_on: Workspace, lr: ModelVersion, logistic: LogisticRegression, now: datetime
) -> None:
    """Two hours ago x3 moved; in the last hour it is back. Version 2's traffic, whose x5 moved,
    is no part of version 1's window."""
    rng = np.random.default_rng(0)
    other = register(
        workspace_on, logistic, Registration("lr", reference_data=rng.normal(size=(600, FEATURES)))
    )
    old = [(now - timedelta(hours=2, minutes=i), shifted(rng, 100, (3,))) for i in range(10)]
    new = [(now - timedelta(minutes=50 - i), shifted(rng, 100, ())) for i in range(10)]
    log_traffic(workspace_on, lr, logistic, [*old, *new])
    log_traffic(workspace_on, other, logistic, [(now, shifted(rng, 1000, (5,)))])
    home, store, settings = workspace_on.home, workspace_on.store, workspace_on.settings

    recent = drift_now(home, store, settings, lr, "1h")
    assert (recent["rows"], recent["drifted"]) == (1000, [])
    both = drift_now(home, store, settings, lr, "3h")
    assert both["rows"] == 2000
    assert "x3" in both["drifted"]
    assert [name for name in both["drifted"] if not name.startswith("output.")] == ["x3"]
    newest = drift_now(home, store, settings, lr, "500rows")
    assert (newest["rows"], newest["drifted"]) == (500, [])
    assert drift_now(home, store, settings, other, "1h")["drifted"] == ["x5"]

    stored = latest_drift(store.engine, "lr", version=1)
    assert [row.feature for row in stored] == [feature["feature"] for feature in newest["features"]]
    assert {(row.window, row.rows) for row in stored} == {("500rows", 500)}
    assert stored[0].computed_at.isoformat() == newest["computed_at"]
    assert {row.version for row in latest_drift(store.engine, "lr")} == {2}
    proba = next(row for row in stored if row.feature == "output.predict_proba[1]")
    assert proba.method == "psi+ks"
    assert proba.details["values"] == 500


def test_a_window_past_the_cap_holds_its_newest_rows(
    now: datetime,
    workspace: Workspace,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window is cut at MAX_WINDOW_VALUES values (rows × 32 columns here): here x9 moved in
    the newest 300 rows, the most a window may now hold."""
    version = register(workspace, logistic, Registration("lr", reference_data=tabular_data[0]))
    rng = np.random.default_rng(3)
    older = [(now - timedelta(minutes=30 - i), shifted(rng, 100, ())) for i in range(7)]
    newer = [(now - timedelta(minutes=10 - i), shifted(rng, 100, (9,))) for i in range(3)]
    log_traffic(workspace, version, logistic, [*older, *newer])
    now = datetime.now(UTC)
    whole = read_window(workspace.home, version, Window.parse("1h"), workspace.settings, now)
    assert whole.num_rows == 1000
    assert whole.num_columns == FEATURES + 2  # the profiled columns only

    monkeypatch.setattr(drift, "MAX_WINDOW_VALUES", 300 * whole.num_columns)
    for window in ("1h", "700rows"):
        table = read_window(workspace.home, version, Window.parse(window), workspace.settings, now)
        assert table.num_rows == 300
        assert table.column("input.x9").to_numpy().mean() > 2.5  # the newest 300: moved by 3
    report = compute_drift(version.profile or {}, table, Thresholds.of(workspace.settings))
    assert "x9" in report.drifted


def test_drift_reads_sealed_segments_with_the_key(
    now: datetime,
    home: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    workspace = Workspace.open(load_settings({"home": home, "encryption_key": key}, env={}))
    version = register(workspace, logistic, Registration("lr", reference_data=tabular_data[0]))
    rng = np.random.default_rng(1)
    cipher = log_cipher(workspace.settings, workspace.home)
    log_traffic(workspace, version, logistic, [(now, shifted(rng, 400, (7,)))], cipher=cipher)
    assert list((home / PREDICTIONS / "lr").glob("*/*.parquet.sealed"))

    report = drift_now(workspace.home, workspace.store, workspace.settings, version, "1h")
    assert report["rows"] == 400
    assert [name for name in report["drifted"] if not name.startswith("output.")] == ["x7"]


def test_a_version_without_a_profile_has_no_drift_to_compute(
    workspace: Workspace, logistic: LogisticRegression
) -> None:
    signature = {
        "inputs": [{"name": f"x{j}", "datatype": "FP64"} for j in range(FEATURES)],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
        "tabular": True,
    }
    version = register(workspace, logistic, Registration("bare", signature=signature))
    with pytest.raises(Conflict, match="no reference profile"):
        drift_now(workspace.home, workspace.store, workspace.settings, version)


def test_the_periodic_job_stores_a_report_per_served_version_with_traffic(
    now: datetime,
    workspace_on: Workspace,
    lr: ModelVersion,
    logistic: LogisticRegression,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Versions without traffic or without a profile are passed over; one that fails is logged
    and the others still get their report, over the newest ``drift_max_rows`` of the window."""
    rng = np.random.default_rng(2)
    quiet = register(
        workspace_on, logistic, Registration("quiet", reference_data=rng.normal(size=(50, 30)))
    )
    broken = register(
        workspace_on, logistic, Registration("broken", reference_data=rng.normal(size=(50, 30)))
    )
    minutes = [now - timedelta(minutes=3 - i) for i in range(3)]
    log_traffic(workspace_on, lr, logistic, [(t, shifted(rng, 100, (1, 2))) for t in minutes])
    log_traffic(workspace_on, broken, logistic, [(now, shifted(rng, 300, ()))])
    unprofiled = ModelVersion(**{**lr.__dict__, "model": "unprofiled", "profile": None})
    damaged = ModelVersion(**{**broken.__dict__, "profile": {"features": {"x0": {}}}})
    settings = load_settings(
        {
            "home": workspace_on.home.root,
            "database_url": workspace_on.settings.database_url,
            "drift_window": "10m",
            "drift_max_rows": 200,
        },
        env={},
    )

    reports = run_drift_once(
        workspace_on.home, workspace_on.store, settings, [lr, quiet, unprofiled, damaged, lr]
    )

    assert list(reports) == ["lr:1"]
    assert reports["lr:1"].rows == 200  # the newest drift_max_rows of the 300 logged
    assert reports["lr:1"].drifted[:2] == ["x1", "x2"]
    assert "drift of broken:1 not computed" in caplog.text
    with workspace_on.store.engine.connect() as connection:
        stored = connection.execute(
            select(drift_reports.c.model, drift_reports.c.window, func.count()).group_by(
                drift_reports.c.model, drift_reports.c.window
            )
        ).all()
    assert stored == [("lr", "10m, newest 200 rows", len(reports["lr:1"].features))]
