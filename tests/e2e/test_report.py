"""The compliance report of a model taken the governed way — registered, its card set, promoted
to production by one principal and approved by another — then served with keys required: real
traffic logged by the server, labels posted for it, drift computed by the server's route, live
accuracy by the evaluation ``dockyard monitor evaluate`` runs, an open alert.

The report written by the real CLI opens in headless Chromium from a ``file://`` URL with every
other request refused, and shows the real card, lineage, approval, gates, audit trail and
monitoring numbers; the JSON has the same facts; the HTTP report answers an auditor and refuses a
predictor; the card routes read and set cards with the permission table's roles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Request, Route
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from browsers import RENDER_TIMEOUT_MS, chromium
from clirun import run_cli
from dockyard.config import load_settings
from dockyard.home import Home
from dockyard.monitoring.drift import latest_drift
from dockyard.monitoring.feedback import evaluate
from dockyard.monitoring.predlog import read_predictions
from dockyard.registry.audit import read_entries
from dockyard.registry.store import utc_now
from dockyard.registry.tables import alerts
from dockyard.security.principals import Principal, Role, local_user
from dockyard.services import cards, promotions
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 12
ROWS = 5
CARD = {
    "intended_use": "Rank card payments for manual fraud review.",
    "limitations": "Trained on EU traffic of 2025 only.",
    "ethical_considerations": "Reviewed for disparate impact by country <2025-Q3>.",
    "owners": ["risk-team@example.com", "Ada Lovelace"],
}
REQUESTER = Principal("release-bot", Role.DEPLOYER)
APPROVER = Principal("carol", Role.APPROVER)
ALERT = "drift on lr: x0 has drifted (PSI 0.41 > 0.2)"


@dataclass
class Governed:
    """The home, its server (keys required) and what the report must show."""

    home: Path
    server: Server
    keys: dict[str, str]
    """Role → a key of that role."""
    workspace: Workspace
    registrant: str
    accuracy: float
    """The live accuracy ``monitor evaluate`` measured on the labelled traffic."""


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Governed]:
    """``lr:1`` registered by the local user, its card set, promoted to production by
    ``REQUESTER`` and approved by ``APPROVER``; served with real traffic, labels, drift, live
    accuracy and an open alert. One server for the module's tests."""
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    x, y = tabular_data
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCKYARD_PREDICTION_LOG", "true")
        env.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
        # No monitoring round runs: it would resolve the alert of a rule this server lacks.
        env.setenv("DOCKYARD_DRIFT_INTERVAL_S", "3600")
        env.delenv("DOCKYARD_CONFIG", raising=False)
        workspace = Workspace.open(load_settings({"home": home}, env={}))
        admin = local_user()
        register(
            workspace,
            logistic,
            Registration("lr", reference_data=x[:50], metrics={"accuracy": 0.93}),
        )
        cards.set_card(workspace, admin, "lr", 1, CARD)
        request = promotions.request_promotion(
            workspace, REQUESTER, "lr", 1, "production", "fraud model, first release"
        )
        promotions.approve(workspace, APPROVER, request.id, "card and gates reviewed")
        keys = {
            role.value: workspace.keys.create(admin, f"report-{role.value}", role)[1]
            for role in (Role.PREDICTOR, Role.DEPLOYER, Role.AUDITOR)
        }
        workspace.store.engine.dispose()
        server = Server(home, ["--workers", "1"], root / "server.log", auth=True)
        try:
            _serve_traffic(server, home, x, y)
            admin_key = {"Authorization": f"Bearer {server.admin_key}"}
            drift = httpx.get(f"{server.url}/api/models/lr/drift", headers=admin_key, timeout=30)
            assert drift.status_code == 200, drift.text
            scores = evaluate(Home(home), workspace.store, "lr", "1h")
            [accuracy] = [score.value for score in scores if score.metric == "accuracy"]
            with workspace.store.engine.begin() as connection:
                now = utc_now()
                connection.execute(
                    insert(alerts).values(
                        rule="drift", model="lr", state="open", value=0.41, message=ALERT,
                        fired_at=now, last_seen_at=now, resolved_at=None,
                    )
                )  # fmt: skip
            yield Governed(home, server, keys, workspace, admin.actor, accuracy)
        finally:
            server.stop()
            workspace.store.close()


def _serve_traffic(server: Server, home: Path, x: np.ndarray, y: np.ndarray) -> None:
    """``REQUESTS`` predictions of ``ROWS`` rows each, then the true label of every row."""
    labels = []
    bearer = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(headers=bearer, timeout=30) as http:
        for index in range(REQUESTS):
            rows = x[index * ROWS : (index + 1) * ROWS]
            body = {
                "inputs": [
                    {"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                     "data": rows.ravel().tolist()}
                ]
            }  # fmt: skip
            answered = http.post(f"{server.url}/v2/models/lr/infer", json=body)
            assert answered.status_code == 200, answered.text
            labels += [
                {"request_id": answered.headers["x-request-id"], "row": row, "label": int(truth)}
                for row, truth in enumerate(y[index * ROWS : (index + 1) * ROWS])
            ]
        wait_for(
            lambda: read_predictions(Home(home), "lr", columns=["row"]).num_rows == REQUESTS * ROWS
        )
        sent = http.post(f"{server.url}/v2/models/lr/feedback", json={"labels": labels})
        assert sent.status_code == 200, sent.text


def test_the_report_opens_offline_in_a_browser_with_the_real_facts(
    governed: Governed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "report", "lr", "--out", str(out), "--home", str(governed.home))
    assert code == 0, err
    facts = _facts(governed)

    requested: list[str] = []
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(offline=True)

        def only_the_file(route: Route) -> None:
            requested.append(route.request.url)
            if route.request.url == out.as_uri():
                route.continue_()
            else:
                route.abort()

        def failed(request: Request) -> None:
            problems.append(f"failed: {request.url} {request.failure}")

        context.route("**/*", only_the_file)
        page = context.new_page()
        page.on("requestfailed", failed)
        page.on("pageerror", lambda error: problems.append(f"error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}"))
        page.goto(out.as_uri(), timeout=RENDER_TIMEOUT_MS)
        text = page.inner_text("body")
        sections = {
            name: page.inner_text(f"#{name}")
            for name in ("lineage", "approvals", "gates", "audit", "traffic", "drift")
        }
        sections["evaluations"] = page.inner_text("#evaluations")
        sections["alerts"] = page.inner_text("#alerts")
        drift_rows = page.locator("#drift tr").count() - 1
        owners = page.locator("[data-field=owners] li").all_inner_texts()
        ethics = page.inner_text("[data-field=ethical_considerations] .text")
        out_of_scope = page.inner_text("[data-field=out_of_scope_use]")
        assert page.locator("script, link, img, iframe").count() == 0
        context.close()

    assert requested == [out.as_uri()]
    assert problems == []
    assert "Compliance report: lr:1" in text
    assert owners == CARD["owners"]
    assert ethics == CARD["ethical_considerations"]
    assert out_of_scope.split() == ["Out-of-scope", "use", "Not", "given."]
    for fact in facts["lineage"]:
        assert fact in sections["lineage"]
    approval = sections["approvals"]
    for fact in ("#1", "@production", "approved", "key:release-bot", "key:carol"):
        assert fact in approval
    assert "card and gates reviewed" in approval
    assert re.search(r"card\s+passed\s+has intended_use, limitations, owners", sections["gates"])
    audit = sections["audit"]
    for action in ("model.register", "card.set", "promotion.request", "promotion.approve"):
        assert action in audit
    assert "intact" in text
    assert f"Requests logged\t{REQUESTS}" in sections["traffic"]
    assert f"Rows predicted\t{REQUESTS * ROWS}" in sections["traffic"]
    assert drift_rows == facts["features"]
    assert re.search(
        rf"accuracy\s+{governed.accuracy:.4g}\s+0.93\s+{REQUESTS * ROWS}", sections["evaluations"]
    )
    assert ALERT in sections["alerts"]


def _facts(governed: Governed) -> dict[str, Any]:
    """What the report must show, read from the registry and the monitoring tables directly."""
    version = governed.workspace.store.get_version("lr", 1)
    lineage = version.lineage
    return {
        "lineage": [
            str(lineage.data_sha256),
            f"{lineage.data_rows} rows",
            f"Python {lineage.python_version}",
            governed.registrant,
            version.artifact.digest,
        ],
        "features": len(latest_drift(governed.workspace.store.engine, "lr", 1)),
    }


def test_the_json_report_has_the_same_facts(
    governed: Governed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"

    code, _, err = run_cli(
        capsys, "report", "lr", "--version", "1", "--out", str(out), "--home", str(governed.home)
    )

    assert code == 0, err
    report = json.loads(out.read_text())
    version = governed.workspace.store.get_version("lr", 1)
    assert (report["ref"], report["aliases"], report["metrics"]) == (
        "lr:1",
        ["production"],
        {"accuracy": 0.93},
    )
    assert report["card"]["card"] == CARD
    assert report["card"]["lineage"]["data_sha256"] == version.lineage.data_sha256
    assert report["card"]["lineage"]["created_by"] == governed.registrant
    [approval] = report["approvals"]
    assert (approval["state"], approval["requested_by"], approval["decided_by"]) == (
        "approved",
        REQUESTER.actor,
        APPROVER.actor,
    )
    gates = report["gates"]
    assert (gates["evaluated"], gates["alias"], gates["passed"]) == (True, "production", True)
    assert "card" in [gate["name"] for gate in gates["results"]]
    audit = report["audit"]
    assert audit["chain_intact"] is True
    assert [entry["action"] for entry in audit["entries"]][:5] == [
        "model.register",
        "card.set",
        "promotion.request",
        "promotion.approve",
        "alias.move",
    ]
    monitoring = report["monitoring"]
    assert monitoring["traffic"]["requests"] == REQUESTS
    assert monitoring["traffic"]["rows"] == REQUESTS * ROWS
    assert len(monitoring["drift"]) == len(latest_drift(governed.workspace.store.engine, "lr", 1))
    assert {row["rows"] for row in monitoring["drift"]} == {REQUESTS * ROWS}
    [accuracy] = [e for e in monitoring["evaluations"] if e["metric"] == "accuracy"]
    assert accuracy["value"] == pytest.approx(governed.accuracy, rel=1e-5)
    assert (accuracy["registered"], accuracy["rows"]) == (0.93, REQUESTS * ROWS)
    assert [alert["message"] for alert in monitoring["alerts"]] == [ALERT]


def test_the_http_report_answers_an_auditor_and_refuses_a_predictor(governed: Governed) -> None:
    url = f"{governed.server.url}/api/models/lr/report"

    def get(role: str, **params: Any) -> httpx.Response:
        key = {"Authorization": f"Bearer {governed.keys[role]}"}
        return httpx.get(url, params=params, headers=key, timeout=60)

    page = get("auditor")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "Compliance report: lr:1" in page.text
    assert "key:carol" in page.text
    data = get("auditor", format="json", version=1).json()
    assert data["card"]["card"] == CARD
    assert data["monitoring"]["traffic"]["requests"] == REQUESTS
    refused = get("predictor")
    assert refused.status_code == 403
    assert "read audit" in refused.json()["error"]
    assert get("auditor", format="pdf").status_code == 400
    assert get("auditor", version=9).status_code == 404
    assert httpx.get(url, timeout=30).status_code == 401


def test_the_cli_writes_the_servers_report_with_a_key(
    governed: Governed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "remote.json"
    url = ("--url", governed.server.url)
    monkeypatch.setenv("DOCKYARD_API_KEY", governed.keys["auditor"])

    code, _, err = run_cli(capsys, "report", "lr", "--version", "1", "--out", str(out), *url)

    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["card"]["card"] == CARD
    assert data["monitoring"]["traffic"]["requests"] == REQUESTS
    monkeypatch.setenv("DOCKYARD_API_KEY", governed.keys["predictor"])
    code, out_text, err = run_cli(capsys, "report", "lr", *url)
    assert (code, out_text) == (3, "")
    assert "read audit" in err


def test_the_card_routes_read_and_set_cards_by_role(governed: Governed) -> None:
    url = f"{governed.server.url}/api/models/lr/versions/1/card"

    def call(method: str, role: str, **kwargs: Any) -> httpx.Response:
        key = {"Authorization": f"Bearer {governed.keys[role]}"}
        return httpx.request(method, url, headers=key, timeout=30, **kwargs)

    shown = call("GET", "predictor")
    assert shown.status_code == 200, shown.text
    assert shown.json()["card"] == CARD
    markdown = call("GET", "auditor", params={"format": "markdown"})
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.startswith("# Model card: lr:1\n")
    assert "<li>Ada Lovelace</li>" in call("GET", "auditor", params={"format": "html"}).text
    assert call("GET", "auditor", params={"format": "pdf"}).status_code == 400

    assert call("PUT", "predictor", json={"owners": ["mallory"]}).status_code == 403
    bad = call("PUT", "deployer", json={**CARD, "intended_uses": "x"})
    assert bad.status_code == 400
    assert "unknown model card field 'intended_uses'" in bad.json()["error"]
    assert governed.workspace.store.get_version("lr", 1).card == CARD
    try:
        changed = call("PUT", "deployer", json={**CARD, "evaluation": "AUC 0.91 on holdout"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["card"]["evaluation"] == "AUC 0.91 on holdout"
        [entry] = [e for e in read_entries(governed.workspace.store.engine, model="lr", limit=1)]
        assert (entry.actor, entry.action, entry.details) == (
            "key:report-deployer",
            "card.set",
            {"fields": ["evaluation"]},
        )
    finally:
        cards.set_card(governed.workspace, local_user(), "lr", 1, CARD)
