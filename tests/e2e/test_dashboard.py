"""The monitoring dashboard: ``GET /api/monitoring/overview`` against known rows (prediction log
segments written by the log's own writer, drift reports by the drift module's, evaluation and
alert rows in the real tables), the page and its assets, and the page in a real headless Chromium
against a real server with keys required and traffic: the key form, the charts drawn with data,
the alert listed, and every request kept on the server.

Chromium is Debian's (``/usr/bin/chromium``; CI installs it): without it the browser test fails.
``DOCKYARD_SCREENSHOT=1`` also writes the screenshot to ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from browsers import ASSET_URL, RENDER_TIMEOUT_MS, chromium
from dockyard.config import load_settings
from dockyard.errors import InvalidInput
from dockyard.monitoring.drift import DriftReport, FeatureDrift, Thresholds, Window, store_report
from dockyard.monitoring.feedback import evaluate
from dockyard.monitoring.metrics import LATENCY_BOUNDS_S, Snapshot
from dockyard.monitoring.overview import overview
from dockyard.monitoring.predlog import PREDICTIONS, PredictionLog
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import utc_now
from dockyard.registry.tables import alerts, evaluations
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.dashboard import ASSETS, ASSETS_URL, PAGE_POLICY
from dockyard.serving.gateway import build_local_gateway
from homes import open_unprotected
from registry.conftest import (  # noqa: F401 (the registry tests' database fixtures)
    database_url,
    postgres_admin,
)
from servers import Server
from waiting import wait_for

OVERVIEW = "/api/monitoring/overview"
SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"
FEATURES = 30
OPEN_ALERT = "drift on lr: x0 has drifted (PSI 0.41 > 0.2)"


def _minute(moment: datetime) -> float:
    return moment.timestamp() // 60 * 60


def _log(home: Path, version: ModelVersion, requests: list[tuple[datetime, int, float]]) -> None:
    """Write ``requests`` (time, rows, latency in ms) with the prediction log's own writer."""
    times = iter([moment.timestamp() for moment, _, _ in requests])
    log = PredictionLog(home / PREDICTIONS, clock=lambda: next(times))
    output = version.signature.outputs[0].name
    for index, (_, rows, latency_ms) in enumerate(requests):
        inputs = {"input-0": np.full((rows, FEATURES), 0.5)}
        outputs = {output: np.zeros(rows, dtype=np.int64)}
        log.append(version, f"seeded-{index}", "key:seed", latency_ms / 1000, inputs, outputs)
    assert log.flush() == sum(rows for _, rows, _ in requests)


def _feature(name: str, psi: float, drifted: bool) -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test="ks",
        psi=psi,
        statistic=psi / 2,
        p_value=0.001 if drifted else 0.5,
        drifted=drifted,
        values=100,
        missing=0.0,
        reference_missing=0.0,
        out_of_range=0.25 if drifted else 0.0,
        unseen=None,
    )


def _drift(
    workspace: Workspace, version: ModelVersion, reports: list[tuple[datetime, float]]
) -> None:
    """Drift reports of two features by the drift module's writer: ``x0`` scored as given
    (drifted above 0.2), ``x1`` steady."""
    window = Window.parse("24h")
    for at, psi in reports:
        features = (_feature("x0", psi, psi > 0.2), _feature("x1", 0.01, False))
        report = DriftReport(rows=100, features=features, thresholds=Thresholds(0.2, 0.01))
        store_report(workspace.store.engine, version, window, report, at)


def _rows(workspace: Workspace, table: Any, rows: list[dict[str, Any]]) -> None:
    with workspace.store.engine.begin() as connection:
        connection.execute(insert(table), rows)


def _evaluation(model: str, at: datetime, value: float, rows: int) -> dict[str, Any]:
    return {
        "model": model,
        "version": 1,
        "computed_at": at,
        "window": "24h",
        "metric": "accuracy",
        "value": value,
        "rows": rows,
    }


def _alert(rule: str, model: str | None, state: str, at: datetime, message: str) -> dict[str, Any]:
    return {
        "rule": rule,
        "model": model,
        "state": state,
        "value": 0.41,
        "message": message,
        "fired_at": at,
        "last_seen_at": at,
        "resolved_at": at if state == "resolved" else None,
    }


def _seed(workspace: Workspace, version: ModelVersion, now: datetime) -> None:
    """Known traffic, drift, evaluations and alerts around ``now``."""
    early = now - timedelta(minutes=10)
    _log(
        workspace.home.root,
        version,
        [
            (now - timedelta(hours=25), 1, 5.0),  # outside a 24 h window
            (early, 1, 10.0),
            (early + timedelta(seconds=1), 4, 20.0),
            (early + timedelta(seconds=2), 1, 30.0),
            (now - timedelta(minutes=5), 2, 100.0),
        ],
    )
    _drift(
        workspace,
        version,
        [(now - timedelta(minutes=m), psi) for m, psi in ((50, 0.05), (30, 0.15), (10, 0.41))],
    )
    _rows(
        workspace,
        evaluations,
        [
            _evaluation("lr", now - timedelta(days=2), 0.99, 10),  # outside the window
            _evaluation("lr", now - timedelta(minutes=40), 0.9, 100),
            _evaluation("lr", now - timedelta(minutes=20), 0.8, 200),
        ],
    )
    _rows(
        workspace,
        alerts,
        [
            _alert("drift", "lr", "open", now - timedelta(minutes=10), OPEN_ALERT),
            _alert("drift", "lr", "resolved", now - timedelta(hours=2), "resolved long ago"),
            _alert("errors", "ghost", "open", now - timedelta(minutes=3), "another model's"),
            _alert("security", None, "open", now - timedelta(minutes=1), "many refusals"),
        ],
    )


@pytest.fixture
def seeded(
    home: Path,
    database_url: str,  # noqa: F811
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[tuple[Workspace, datetime]]:
    """A home with ``lr`` v1 (alias production, accuracy 0.95 at registration) and known
    monitoring data ending at the returned moment (a whole minute), its registry on SQLite or
    PostgreSQL."""
    workspace = open_unprotected(home, prediction_log=True, database_url=database_url)
    version = register(
        workspace,
        logistic,
        Registration(
            "lr",
            reference_data=tabular_data[0][:50],
            alias="production",
            metrics={"accuracy": 0.95},
        ),
    )
    now = utc_now().replace(second=0, microsecond=0)
    _seed(workspace, version, now)
    yield workspace, now
    workspace.store.close()


def _overview(workspace: Workspace, now: datetime, **options: Any) -> dict[str, Any]:
    settings = workspace.settings
    arguments = {"since": "24h", "visible": lambda name: True, "totals": None, **options}
    return overview(workspace.home, workspace.store, settings, now=now, **arguments)


def test_the_overview_counts_the_logged_traffic_per_minute(
    seeded: tuple[Workspace, datetime],
) -> None:
    workspace, now = seeded
    early = _minute(now - timedelta(minutes=10))
    late = _minute(now - timedelta(minutes=5))

    found = _overview(workspace, now)

    assert found["bucket_s"] == 60
    assert found["end"] - found["start"] == 24 * 3600
    [model] = found["models"]
    traffic = model["traffic"]
    assert traffic["requests"] == 4  # the request 25 h ago is outside the window
    assert traffic["rows"] == 8
    assert traffic["complete"] is True
    assert traffic["sample"] == 1.0
    assert traffic["series"]["t"] == [early, late]
    assert traffic["series"]["requests"] == [3, 1]
    assert traffic["series"]["rows"] == [6, 2]
    # Latency is per request (a request of four rows counts once), in ms.
    assert traffic["series"]["p50_ms"] == [20.0, 100.0]
    assert traffic["series"]["p99_ms"] == [30.0, 100.0]
    assert traffic["p50_ms"] == pytest.approx(25.0, abs=5.0)
    assert traffic["p99_ms"] == 100.0


def test_the_overview_lists_versions_drift_evaluations_and_open_alerts(
    seeded: tuple[Workspace, datetime],
) -> None:
    workspace, now = seeded

    found = _overview(workspace, now)

    [model] = found["models"]
    assert model["name"] == "lr"
    assert model["aliases"] == {"production": 1}
    [version] = model["versions"]
    assert version["version"] == 1
    assert version["aliases"] == ["production"]
    assert version["metrics"] == {"accuracy": 0.95}
    assert [feature["feature"] for feature in model["drift"]] == ["x0", "x1"]  # drifted first
    x0 = model["drift"][0]
    assert x0["method"] == "psi+ks"
    assert x0["score"] == [0.05, 0.15, 0.41]
    assert x0["drifted"] == [False, False, True]
    assert x0["t"] == [(now - timedelta(minutes=m)).timestamp() for m in (50, 30, 10)]
    assert x0["latest"]["drifted"] is True
    assert x0["latest"]["details"]["out_of_range"] == 0.25
    [accuracy] = model["evaluations"]  # the one of two days ago is outside the window
    assert accuracy["metric"] == "accuracy"
    assert accuracy["version"] == 1
    assert accuracy["value"] == [0.9, 0.8]
    assert accuracy["rows"] == [100, 200]
    assert accuracy["registered"] == 0.95
    assert [alert["message"] for alert in found["alerts"]] == [
        "many refusals",
        "another model's",
        OPEN_ALERT,
    ]
    assert found["thresholds"] == {"psi": 0.2, "p_value": 0.01}


def test_the_overview_shows_a_scoped_caller_only_its_models(
    seeded: tuple[Workspace, datetime],
) -> None:
    workspace, now = seeded

    found = _overview(workspace, now, visible=lambda name: name == "ghost")

    assert found["models"] == []
    assert [alert["message"] for alert in found["alerts"]] == ["many refusals", "another model's"]


def test_a_shorter_window_leaves_older_data_out(seeded: tuple[Workspace, datetime]) -> None:
    workspace, now = seeded

    [model] = _overview(workspace, now, since="7m")["models"]

    assert model["traffic"]["requests"] == 1
    assert model["traffic"]["series"]["requests"] == [1]
    assert model["drift"] == []
    assert model["evaluations"] == []


def test_the_overview_counts_answers_and_errors_from_the_metrics(
    seeded: tuple[Workspace, datetime],
) -> None:
    workspace, now = seeded
    histogram = [0.0] * (len(LATENCY_BOUNDS_S) + 1)
    totals = Snapshot(
        requests={
            ("lr", 1, "v2", 200): [7, 0.07, *histogram],
            ("lr", 1, "v1", 200): [2, 0.02, *histogram],
            ("lr", None, "v2", 400): [3, 0.003, *histogram],
            ("other", 1, "v2", 500): [5, 0.5, *histogram],
        },
        errors={("lr", "InvalidInput"): 3, ("other", "PredictionFailed"): 5},
    )

    found = _overview(workspace, now, totals=totals)

    assert found["metrics"] is True
    assert found["models"][0]["answered"] == {
        "requests": 12,
        "failed": 3,
        "statuses": {"200": 9, "400": 3},
        "errors": {"InvalidInput": 3},
    }
    assert _overview(workspace, now)["models"][0]["answered"] is None


def test_with_the_prediction_log_off_there_is_no_traffic(
    seeded: tuple[Workspace, datetime],
) -> None:
    workspace, now = seeded
    flags = {
        "home": workspace.home.root,
        "database_url": workspace.settings.database_url,
        "prediction_log": False,
    }
    off = Workspace.open(load_settings(flags, env={}))

    try:
        found = _overview(off, now)
    finally:
        off.store.close()

    assert found["prediction_log"] is False
    assert found["models"][0]["traffic"] is None


@pytest.mark.parametrize("since", ["0s", "32d", "24", "yesterday", "1" * 5000, "-1h"])
def test_a_bad_window_is_refused_naming_it(seeded: tuple[Workspace, datetime], since: str) -> None:
    workspace, now = seeded

    with pytest.raises(InvalidInput, match="since="):
        _overview(workspace, now, since=since)


@pytest.fixture
async def client(seeded: tuple[Workspace, datetime]) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process on the seeded home, keys off."""
    workspace, _ = seeded
    gateway = build_local_gateway(workspace, [])
    app = create_app(workspace.settings, gateway, Authenticator(None), workspace)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        gateway.close()


async def test_the_overview_route_answers_the_overview(client: httpx.AsyncClient) -> None:
    response = await client.get(OVERVIEW, params={"since": "24h"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    found = response.json()
    assert found["since"] == "24h"
    [model] = found["models"]
    assert model["traffic"]["requests"] == 4
    assert [feature["feature"] for feature in model["drift"]] == ["x0", "x1"]
    assert OPEN_ALERT in [alert["message"] for alert in found["alerts"]]
    assert (await client.get(OVERVIEW)).json()["since"] == "24h"


@pytest.mark.parametrize("since", ["", "0s", "400d", "1h; DROP TABLE alerts", "%00"])
async def test_the_overview_route_refuses_a_bad_window(
    client: httpx.AsyncClient, since: str
) -> None:
    response = await client.get(OVERVIEW, params={"since": since})

    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("since=")


async def test_the_page_names_only_its_own_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert PAGE_POLICY in response.headers.get_list("content-security-policy")
    assert "<script>" not in response.text
    assert "style=" not in response.text
    urls = [url for url in ASSET_URL.findall(response.text) if url != "data:,"]  # no favicon
    assert sorted(urls) == sorted(f"{ASSETS_URL}/{name}" for name in ASSETS)
    types = {".js": "text/javascript", ".css": "text/css"}
    for name in ASSETS:
        asset = await client.get(f"{ASSETS_URL}/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(types[Path(name).suffix]), name
        text = asset.text.replace("http://www.w3.org/2000/svg", "")  # a name, never fetched
        assert "http://" not in text, name
        assert "https://" not in text, name
        assert (await client.head(f"{ASSETS_URL}/{name}")).status_code == 200, name


@pytest.mark.parametrize(
    "path",
    ["/dashboard/assets/nope.js", "/dashboard/assets/..%2Fdashboard.py", "/dashboard/assets/"],
)
async def test_nothing_else_is_served_from_the_assets(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


# --- A real server, a real browser ------------------------------------------------------------

HISTORY_MINUTES = 350
"""The browser tests' seeded history: almost six hours of traffic, drift and accuracy (all of it
in the page's window of six hours)."""
DRIFT_EVERY = 15
SCORE_EVERY = 30
DRIFT_REPORTS = len(range(HISTORY_MINUTES, 0, -DRIFT_EVERY))
SCORES = len(range(HISTORY_MINUTES, 0, -SCORE_EVERY))
"""Accuracy values seeded per version."""


def _infer_body(rows: np.ndarray) -> dict[str, Any]:
    shape = list(rows.shape)
    return {
        "inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": rows.ravel().tolist()}]
    }


@pytest.fixture
def history(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> tuple[Workspace, int]:
    """A home with ``lr`` v1 (production) and v2 (staging), hours of logged traffic (a daily
    swell, latency creeping up), drift reports every 15 minutes (``x0`` drifting away), accuracy
    every half hour (v1 slipping below what it scored at registration), an open and a resolved
    alert; and the number of requests logged."""
    workspace = open_unprotected(home)
    x, y = tabular_data
    v1 = register(
        workspace,
        logistic,
        Registration("lr", reference_data=x[:50], alias="production", metrics={"accuracy": 0.95}),
    )
    newer = LogisticRegression(max_iter=500, C=0.5).fit(x, y)
    v2 = register(
        workspace,
        newer,
        Registration("lr", reference_data=x[:50], alias="staging", metrics={"accuracy": 0.96}),
    )
    now = utc_now().replace(second=0, microsecond=0)
    rng = np.random.default_rng(11)
    requests = []
    for minutes in range(HISTORY_MINUTES, 0, -1):
        start = now - timedelta(minutes=minutes)
        count = int(25 + 15 * np.sin(minutes / 45) + rng.integers(0, 8))
        for second in sorted(rng.uniform(0, 60, size=count)):
            latency = float(rng.lognormal(np.log(1.2 + (HISTORY_MINUTES - minutes) / 300), 0.35))
            requests.append((start + timedelta(seconds=second), int(rng.integers(1, 4)), latency))
    _log(workspace.home.root, v1, requests)
    reports = []
    for minutes in range(HISTORY_MINUTES, 0, -DRIFT_EVERY):
        drift = 0.02 + 0.43 * ((HISTORY_MINUTES - minutes) / HISTORY_MINUTES) ** 2
        reports.append((now - timedelta(minutes=minutes), drift))
    _drift(workspace, v1, reports)
    scores = []
    for minutes in range(HISTORY_MINUTES, 0, -SCORE_EVERY):
        slip = (HISTORY_MINUTES - minutes) / HISTORY_MINUTES
        at = now - timedelta(minutes=minutes)
        scores.append(_evaluation("lr", at, 0.93 - 0.08 * slip + rng.normal(0, 0.005), 400))
        scores.append({**_evaluation("lr", at, 0.95 + rng.normal(0, 0.005), 400), "version": 2})
    _rows(workspace, evaluations, scores)
    _rows(
        workspace,
        alerts,
        [
            _alert("drift", "lr", "open", now - timedelta(minutes=40), OPEN_ALERT),
            _alert("drift", "lr", "resolved", now - timedelta(hours=5), "resolved long ago"),
            _alert("errors", "ghost", "open", now - timedelta(minutes=3), "another model's"),
        ],
    )
    assert v2.version == 2
    return workspace, len(requests)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as opened:
        yield opened


@dataclass
class Watched:
    """A page in a fresh browser context where only ``url``'s requests go out (the others are
    aborted and recorded), with what went wrong on it: failed requests, page errors, errors in
    the console (a Content-Security-Policy violation is one)."""

    page: Page
    url: str
    requested: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def stayed_on_the_server(self) -> None:
        assert self.aborted == []
        assert [url for url in self.requested if not url.startswith(f"{self.url}/")] == []


@contextmanager
def _watched(browser: Browser, url: str) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        watched = Watched(context.new_page(), url)

        def only_the_server(route: Route) -> None:
            if route.request.url.startswith(f"{url}/"):
                route.continue_()
            else:
                watched.aborted.append(route.request.url)
                route.abort()

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                watched.problems.append(f"console: {message.text}")

        def failed(request: Request) -> None:
            watched.problems.append(f"failed: {request.url} {request.failure}")

        context.route("**/*", only_the_server)
        watched.page.on("request", lambda request: watched.requested.append(request.url))
        watched.page.on("requestfailed", failed)
        watched.page.on("pageerror", lambda error: watched.problems.append(f"error: {error}"))
        watched.page.on("console", console)
        yield watched
    finally:
        context.close()


def _path_points(page: Page, selector: str) -> list[int]:
    """The points each SVG path under ``selector`` joins."""
    values = page.eval_on_selector_all(
        selector, "paths => paths.map(p => Number(p.getAttribute('data-points')))"
    )
    return [int(value) for value in values]


def _heights(page: Page, selector: str) -> set[float]:
    """The distinct heights (y) of the points of the first path under ``selector``."""
    d = page.get_attribute(selector, "d") or ""
    return {float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d)}


@pytest.mark.e2e
def test_the_dashboard_draws_live_data_in_a_browser(
    history: tuple[Workspace, int],
    start_server: Callable[..., Server],
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    workspace, logged = history
    admin = local_user()
    auditor = workspace.keys.create(admin, "dashboard-auditor", Role.AUDITOR)[1]
    predictor = workspace.keys.create(admin, "dashboard-predictor", Role.PREDICTOR)[1]
    scoped = workspace.keys.create(admin, "scoped-auditor", Role.AUDITOR, ["ghost"])[1]
    workspace.store.engine.dispose()
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_METRICS", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    # The seeded drift, evaluations and alerts stay as written: no monitoring round runs (it
    # would resolve the alerts of rules this server does not configure).
    monkeypatch.setenv("DOCKYARD_DRIFT_INTERVAL_S", "3600")
    server = start_server(workspace.home.root, "--workers", "1", auth=True)
    url = server.url

    # The page and its assets hold no data and load without a key; the data needs one that
    # may read metrics, and shows a scoped key only its models.
    assert httpx.get(f"{url}/dashboard").status_code == 200
    for name in ASSETS:
        assert httpx.get(f"{url}{ASSETS_URL}/{name}").status_code == 200
    assert httpx.get(f"{url}{OVERVIEW}").status_code == 401
    bearer = {"Authorization": f"Bearer {predictor}"}
    assert httpx.get(f"{url}{OVERVIEW}", headers=bearer).status_code == 403
    bearer = {"Authorization": f"Bearer {scoped}"}
    limited = httpx.get(f"{url}{OVERVIEW}", headers=bearer).json()
    assert limited["models"] == []
    assert [alert["model"] for alert in limited["alerts"]] == ["ghost"]

    # Live traffic: answered and refused requests, logged and counted by the server.
    body = _infer_body(np.full((3, FEATURES), 0.1))
    infer = f"{url}/v2/models/lr/infer"
    bearer = {"Authorization": f"Bearer {server.admin_key}"}
    sent = 20
    for _ in range(sent):
        assert httpx.post(infer, json=body, headers=bearer).status_code == 200
    bad = _infer_body(np.ones((1, 2)))
    assert httpx.post(infer, json=bad, headers=bearer).status_code == 400
    auditing = {"Authorization": f"Bearer {auditor}"}

    def lr() -> dict[str, Any]:
        found = httpx.get(f"{url}{OVERVIEW}", params={"since": "6h"}, headers=auditing)
        assert found.status_code == 200, found.text
        model: dict[str, Any] = found.json()["models"][0]
        return model

    wait_for(lambda: lr()["traffic"]["requests"] == logged + sent)
    wait_for(lambda: lr()["answered"]["failed"] == 1)

    with _watched(browser, url) as watched:
        page = watched.page
        page.goto(f"{url}/dashboard?since=6h")
        # No key yet: the data call is refused and the page asks for one.
        page.wait_for_selector("#key-form:not([hidden])", timeout=RENDER_TIMEOUT_MS)
        watched.problems.clear()  # the browser's console reports the refused call (401)
        page.fill("#key", auditor)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=RENDER_TIMEOUT_MS)

        cells = page.locator("#models tbody tr").first.locator("td").all_inner_texts()
        assert cells[0] == "lr"
        assert re.search(r"v1\s*production", cells[1])
        assert re.search(r"v2\s*staging", cells[1])
        assert cells[2] == f"{logged + sent:,}"
        assert cells[5] == f"1 / {sent + 1}"  # failed / all, from the metrics
        assert cells[6] == "1 / 2"  # x0 of x0 and x1 drifted
        assert OPEN_ALERT in page.inner_text("#alerts")
        assert "another model's" in page.inner_text("#alerts")  # not a registered model's
        assert "resolved long ago" not in page.inner_text("#alerts")

        # Traffic: one point a minute over the window, rising and falling.
        [traffic] = _path_points(page, "[data-chart=traffic] path.line")
        assert traffic >= 6 * 60
        assert len(_heights(page, "[data-chart=traffic] path.line")) >= 10
        # Latency: p50 and p99 for each minute with traffic.
        latency = _path_points(page, "[data-chart=latency] path.line")
        assert len(latency) == 2
        assert min(latency) >= HISTORY_MINUTES
        assert page.locator("[data-chart=errors] rect.bar.failed").count() == 2  # 400, its kind
        # Accuracy: each version's live values and the value it had at registration.
        live = _path_points(page, "[data-chart=evaluation-accuracy] path.line:not(.dashed)")
        assert live == [SCORES] * 2
        assert page.locator("[data-chart=evaluation-accuracy] path.dashed").count() == 2
        # Drift: a sparkline per feature, the drifted one first and marked.
        assert page.locator("[data-chart=drift] tbody tr").count() == 2
        assert page.locator("[data-chart=drift] tr.drifted td.name").all_inner_texts() == ["x0"]
        sparklines = _path_points(page, "[data-chart=drift] path.line")
        assert sparklines == [DRIFT_REPORTS] * 2
        assert page.locator("[data-chart=drift] circle.mark").count() >= 1
        assert page.evaluate("sessionStorage.length") == 1  # the key, in this tab only

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size < 400_000
        if os.environ.get("DOCKYARD_SCREENSHOT"):
            shutil.copyfile(shot, SCREENSHOT)

        watched.stayed_on_the_server()
        assert watched.problems == []


@pytest.mark.e2e
def test_without_keys_the_dashboard_opens_with_live_accuracy(
    history: tuple[Workspace, int],
    start_server: Callable[..., Server],
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server started with ``--no-auth`` (metrics off): the page shows its data at once; labels
    posted for live requests and evaluated by the feedback module add a point to the accuracy."""
    workspace, logged = history
    workspace.store.engine.dispose()
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_METRICS", "false")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    monkeypatch.setenv("DOCKYARD_DRIFT_INTERVAL_S", "3600")  # the seeded alerts stay open
    server = start_server(workspace.home.root, "--workers", "1")  # --no-auth
    url = server.url
    body = _infer_body(np.random.default_rng(5).normal(size=(3, FEATURES)))
    labels = []
    for _ in range(4):
        answer = httpx.post(f"{url}/v2/models/lr/infer", json=body)
        assert answer.status_code == 200, answer.text
        request_id = answer.headers["x-request-id"]
        labels += [{"request_id": request_id, "row": row, "label": row % 2} for row in range(3)]
    wait_for(lambda: _requests(url) == logged + 4)
    stored = httpx.post(f"{url}/v2/models/lr/feedback", json={"labels": labels})
    assert stored.status_code == 200, stored.text
    assert {e.metric for e in evaluate(workspace.home, workspace.store, "lr", "1h")} >= {
        "accuracy",
        "precision",
    }
    workspace.store.engine.dispose()

    with _watched(browser, url) as watched:
        page = watched.page
        page.goto(f"{url}/dashboard")
        page.wait_for_selector("body[data-loaded=true]", timeout=RENDER_TIMEOUT_MS)

        assert page.is_hidden("#key-form")
        assert page.is_hidden("#forget")
        cells = page.locator("#models tbody tr").first.locator("td").all_inner_texts()
        assert cells[0] == "lr"
        assert cells[2] == f"{logged + 4:,}"
        assert cells[5] == "–"  # no metrics
        assert "Metrics are off" in page.inner_text("#model-lr")
        assert OPEN_ALERT in page.inner_text("#alerts")
        # The seeded accuracy of v1 and the one just evaluated; precision: that one point alone.
        live = _path_points(page, "[data-chart=evaluation-accuracy] path.line:not(.dashed)")
        assert live == [SCORES + 1, SCORES]
        assert _path_points(page, "[data-chart=evaluation-precision] path.line") == [1]
        assert page.locator("[data-chart=evaluation-precision] circle.line").count() == 1
        watched.stayed_on_the_server()
        assert watched.problems == []


def _requests(url: str) -> int:
    """The requests of ``lr`` the server's overview counts in the last 24 h."""
    found = httpx.get(f"{url}{OVERVIEW}")
    assert found.status_code == 200, found.text
    count: int = found.json()["models"][0]["traffic"]["requests"]
    return count
