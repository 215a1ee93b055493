"""Alerts end to end: real ``dockyard serve`` processes whose monitoring evaluates the
``[alerts.NAME]`` rules of their ``dockyard.toml`` and POSTs to a webhook receiver the test runs
on loopback; ``GET /api/alerts`` and ``dockyard monitor alerts`` (local and ``--url``) show them.

The acceptance test: live traffic whose inputs are shifted for some features is flagged by the
drift job, an alert arrives at the webhook with a valid signature, traffic back on the reference
distribution resolves it, and a "resolved" notification arrives — with two workers, each with a
scheduler, and one notification of each."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from servers import Server, dockyard_command, free_port
from webhooks import Delivery, webhook_receiver

pytestmark = pytest.mark.e2e

SECRET = "webhook-secret-for-the-test"
SHIFTED = ("x0", "x1", "x2")


def config_file(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``text`` as the config file of the servers and commands this test starts."""
    path = tmp_path / "dockyard.toml"
    path.write_text(text)
    monkeypatch.setenv("DOCKYARD_CONFIG", str(path))


def steady(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts without ``last_seen_at``, which each evaluation that still fires moves on."""
    return [{k: v for k, v in alert.items() if k != "last_seen_at"} for alert in alerts]


def states(deliveries: list[Delivery]) -> list[str]:
    return [delivery.payload["state"] for delivery in deliveries]


def infer(server: Server, rows: np.ndarray, batch: int = 50) -> None:
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        body = {
            "inputs": [
                {"name": "x", "shape": list(part.shape), "datatype": "FP64", "data": part.tolist()}
            ]
        }
        response = httpx.post(f"{server.url}/v2/models/lr/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text


def test_drift_in_live_traffic_fires_a_signed_alert_that_resolves_when_traffic_is_back(
    home: Path,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = tabular_data[0][:500]
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=reference, alias="production"))

    with webhook_receiver() as receiver:
        config_file(
            tmp_path,
            f"""
prediction_log = true
log_flush_s = 0.2
drift_window = "500rows"
drift_interval_s = 1
alert_webhook = "{receiver.url}"
alert_webhook_secret = "{SECRET}"

[alerts.lr-inputs]
kind = "drift"
model = "lr"
""",
            monkeypatch,
        )
        server = start_server(home, "--workers", "2")

        shifted = reference.copy()
        shifted[:, : len(SHIFTED)] += 3.0  # three standard deviations
        infer(server, shifted)
        (firing,) = receiver.wait_for(lambda seen: len(seen) >= 1)

        assert firing.signed_with(SECRET)
        assert not firing.signed_with("not the secret")
        alert = firing.payload
        assert (alert["state"], alert["alert"], alert["kind"], alert["model"]) == (
            "firing",
            "lr-inputs",
            "drift",
            "lr",
        )
        flagged = alert["message"].partition(": ")[2]
        for feature in SHIFTED:
            assert f"{feature} (" in flagged, alert["message"]
        assert alert["value"] >= len(SHIFTED)

        time.sleep(3)  # three more rounds, in two workers: still one alert, announced once
        assert len(receiver.deliveries) == 1

        infer(server, reference)  # the window (500 rows) is the reference again
        firing_then_resolved = receiver.wait_for(lambda seen: len(seen) >= 2)

    assert states(firing_then_resolved) == ["firing", "resolved"]
    resolved = firing_then_resolved[1]
    assert resolved.signed_with(SECRET)
    assert resolved.payload["id"] == alert["id"]
    assert resolved.payload["message"].startswith("no drift in lr v1")
    assert "alert lr-inputs firing (drift)" in server.output()
    assert "alert lr-inputs resolved (drift)" in server.output()


def test_alerts_are_listed_by_the_api_and_the_cli_local_and_remote(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = served
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    _, predictor = workspace.keys.create(local_user(), "app", Role.PREDICTOR)
    _, auditor = workspace.keys.create(local_user(), "audit", Role.AUDITOR)
    with webhook_receiver() as receiver:
        config_file(
            tmp_path,
            f"""
drift_interval_s = 1
alert_webhook = "{receiver.url}"
alert_webhook_secret = "{SECRET}"

[alerts.bad-keys]
kind = "security_events"
kinds = ["auth_failed"]
max = 3
window = "6s"
""",
            monkeypatch,
        )
        server = start_server(home, auth=True)
        for _ in range(5):
            refused = httpx.get(f"{server.url}/api/models", headers={"X-API-Key": "dk_bad"})
            assert refused.status_code == 401
        (firing,) = receiver.wait_for(lambda seen: len(seen) >= 1)
        assert firing.signed_with(SECRET)
        assert firing.payload["value"] > 3  # the refusals are written about once a second
        assert firing.payload["message"].endswith(
            "security events (auth_failed) in the last 6s (max 3)"
        )

        listed = httpx.get(
            f"{server.url}/api/alerts", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert listed.status_code == 200, listed.text
        (shown,) = listed.json()
        assert (shown["rule"], shown["state"], shown["model"]) == ("bad-keys", "open", None)
        assert shown["id"] == firing.payload["id"]

        monkeypatch.setenv("DOCKYARD_API_KEY", auditor)
        code, out, err = run_cli(capsys, "monitor", "alerts", "--url", server.url, "--json")
        assert (code, err) == (0, "")
        assert steady(json.loads(out)) == steady([shown])
        code, out, _ = run_cli(capsys, "monitor", "alerts", "--url", server.url)
        assert code == 0
        assert "bad-keys" in out
        assert "open" in out
        monkeypatch.delenv("DOCKYARD_API_KEY")
        code, out, _ = run_cli(capsys, "monitor", "alerts", "--home", str(home), "--json")
        assert code == 0
        assert steady(json.loads(out)) == steady([shown])

        # The window moves past the refusals: resolved, and only --all / state=all shows it.
        firing_then_resolved = receiver.wait_for(lambda seen: len(seen) >= 2)
        assert states(firing_then_resolved) == ["firing", "resolved"]
        admin = {"Authorization": f"Bearer {server.admin_key}"}
        assert httpx.get(f"{server.url}/api/alerts", headers=admin).json() == []
        everything = httpx.get(f"{server.url}/api/alerts?state=all", headers=admin).json()
        assert [(a["rule"], a["state"]) for a in everything] == [("bad-keys", "resolved")]
        code, out, err = run_cli(capsys, "monitor", "alerts", "--home", str(home))
        assert (code, out, err) == (0, "", "no open alerts\n")
        code, out, _ = run_cli(capsys, "monitor", "alerts", "--home", str(home), "--all")
        assert code == 0
        assert "resolved" in out

        bogus = httpx.get(f"{server.url}/api/alerts?state=closed", headers=admin)
        assert bogus.status_code == 400
        assert bogus.json() == {"error": "state must be open or all, got 'closed'"}
        forbidden = httpx.get(
            f"{server.url}/api/alerts", headers={"Authorization": f"Bearer {predictor}"}
        )
        assert forbidden.status_code == 403
        assert httpx.get(f"{server.url}/api/alerts").status_code == 401


def test_a_bad_rule_stops_serve_before_it_starts(served: Path, tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[alerts.slow]\nkind = "p99_latency"\nmax = 100\n')
    env = {**os.environ, "DOCKYARD_HOME": str(served), "DOCKYARD_CONFIG": str(config)}

    finished = subprocess.run(
        [*dockyard_command(), "serve", "--workers", "2", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 2
    assert finished.stderr == (
        "error: alert rule 'slow': unknown key 'max' for a p99_latency rule; "
        "use max_ms, min_requests, model, window\n"
    )


def test_an_error_rate_rule_reads_the_metrics_of_every_worker(
    served: Path,
    tmp_path: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with webhook_receiver() as receiver:
        config_file(
            tmp_path,
            f"""
metrics = true
drift_interval_s = 1
alert_webhook = "{receiver.url}"

[alerts.lr-client-errors]
kind = "error_rate"
model = "lr"
statuses = ["4xx"]
max = 0.25
min_requests = 8
window = "6s"
""",
            monkeypatch,
        )
        server = start_server(served, "--workers", "2")
        infer(server, tabular_data[0][:60], batch=10)  # six answered
        for _ in range(4):
            wrong = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
            answer = httpx.post(f"{server.url}/v2/models/lr/infer", json=wrong)
            assert answer.status_code == 400

        (firing,) = receiver.wait_for(lambda seen: len(seen) >= 1)
        assert firing.payload["alert"] == "lr-client-errors"
        assert firing.payload["value"] > 0.25
        assert "requests to lr in the last 6s answered 4xx (max 25.0%)" in firing.payload["message"]
        # No requests for a whole window: resolved.
        firing_then_resolved = receiver.wait_for(lambda seen: len(seen) >= 2)
    assert states(firing_then_resolved) == ["firing", "resolved"]
    assert "X-Dockyard-Signature".lower() not in firing.headers  # no secret set: unsigned
