"""``GET /metrics`` against real servers: the counts summed over forked workers equal the requests
sent (a worker killed with SIGKILL keeps its counts), scraping needs a role that reads metrics,
and every metric the exported Grafana dashboard and Prometheus rules name is there."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from dockyard.config import load_settings
from dockyard.monitoring.metrics import Snapshot
from dockyard.registry.tables import drift_reports, evaluations
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from servers import Server, dockyard_command
from waiting import wait_for

pytestmark = pytest.mark.e2e

ROW = [0.25] * 30
V2 = {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": ROW}]}
V1 = {"instances": [ROW, ROW]}
WAIT_S = 10.0
METRIC_NAME = re.compile(r"\bdockyard_[a-z0-9_]+")


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape(server: Server, key: str | None = None) -> Samples:
    """Sample name → (labels, value) of every sample ``/metrics`` shows."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _by_status(server: Server) -> Counter[str]:
    """Requests counted, summed over models, versions and routes, by status."""
    counted: Counter[str] = Counter()
    for labels, value in _scrape(server).get("dockyard_requests_total", []):
        counted[labels["status"]] += int(value)
    return counted


def _metrics_files(home: Path) -> list[Path]:
    return sorted(home.glob("tmp/*-metrics/*.json"))


def test_counts_summed_over_two_workers_equal_the_requests_sent_and_survive_a_killed_worker(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--workers", "2")
    wait_for(lambda: len(server.workers()) == 2, "two workers", timeout_s=WAIT_S)
    sent: Counter[str] = Counter()

    def send(count: int, path: str, body: object) -> None:
        for _ in range(count):  # a new connection each: both workers take some
            sent[str(httpx.post(f"{server.url}{path}", json=body).status_code)] += 1

    def both_counted() -> bool:
        files = _metrics_files(served)
        return len(files) == 2 and all(
            Snapshot.from_bytes(file.read_bytes()).requests for file in files
        )

    send(40, "/v2/models/lr/infer", V2)
    predicted = 40
    # Which worker accepts a connection is the kernel's choice: on a loaded machine one may take
    # them all. Go on until both have counted some (each files its counts every second).
    deadline = time.monotonic() + WAIT_S
    while not both_counted() and time.monotonic() < deadline:
        send(5, "/v2/models/lr/infer", V2)
        predicted += 5
        time.sleep(0.2)
    send(5, "/v1/models/lr:predict", V1)
    send(6, "/v2/models/no-such-model/infer", V2)
    send(4, "/v2/models/lr/infer", {"inputs": []})
    assert sent == {"200": predicted + 5, "404": 6, "400": 4}

    wait_for(lambda: _by_status(server) == sent, f"counts {sent}", timeout_s=WAIT_S)
    samples = _scrape(server)
    latency = sum(value for _, value in samples["dockyard_request_duration_seconds_count"])
    assert latency == sum(sent.values())
    rows = sum(value for _, value in samples["dockyard_batch_rows_sum"])
    assert rows == predicted + 5 * 2
    files = _metrics_files(served)
    assert len(files) == 2, "one file per worker"
    for file in files:  # both took requests: the sums above add up two workers' counts
        assert Snapshot.from_bytes(file.read_bytes()).requests, f"{file.name} counted none"

    def logged() -> dict[str, float]:
        samples = _scrape(server)
        shown = {
            labels["outcome"]: value
            for labels, value in samples["dockyard_prediction_log_rows_total"]
        }
        shown["waiting"] = sum(v for _, v in samples["dockyard_prediction_log_pending_rows"])
        return shown

    # Every row answered was logged (the log is on by default), by both workers' writers.
    wait_for(
        lambda: logged() == {"written": rows, "shed": 0, "waiting": 0},
        f"{rows} logged",
        timeout_s=WAIT_S,
    )
    writers = _scrape(server)["dockyard_prediction_log_writer_cpu_seconds_total"]
    assert writers[0][1] > 0

    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in (workers := server.workers()) and len(workers) == 2,
        "the killed worker replaced",
        timeout_s=WAIT_S,
    )
    wait_for(
        lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
        "ready",
        timeout_s=WAIT_S,
    )
    assert _by_status(server) == sent

    def new_worker_counted() -> bool:
        # Requests until the new worker has taken some (the kernel may hand a slow-starting
        # worker none of the first ones) and written its own file beside the two before.
        send(2, "/v2/models/lr/infer", V2)
        return len(_metrics_files(served)) == 3

    wait_for(new_worker_counted, "the new worker writes a file of its own", timeout_s=WAIT_S)
    wait_for(
        lambda: _by_status(server) == sent, f"counts {sent} after the restart", timeout_s=WAIT_S
    )


def test_scraping_needs_a_role_that_reads_metrics(
    served: Path, start_server: Callable[..., Server]
) -> None:
    workspace = Workspace.open(load_settings({"home": served}, env={}))
    _, predictor = workspace.keys.create(local_user(), "app", Role.PREDICTOR)
    _, auditor = workspace.keys.create(local_user(), "prometheus", Role.AUDITOR)
    server = start_server(served, auth=True)
    url = f"{server.url}/metrics"

    assert httpx.get(url).status_code == 401
    refused = httpx.get(url, headers={"Authorization": f"Bearer {predictor}"})
    assert refused.status_code == 403
    assert "may not read metrics" in refused.json()["error"]
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {auditor}"})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

    def events() -> dict[str, float]:
        shown = _scrape(server, auditor).get("dockyard_security_events_total", [])
        return {labels["kind"]: value for labels, value in shown}

    wait_for(
        lambda: events() == {"auth_failed": 1, "forbidden": 1},
        "the two refusals counted",
        timeout_s=WAIT_S,
    )


def test_metrics_off_is_a_clear_404(
    served: Path, start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_METRICS", "false")
    server = start_server(served)

    response = httpx.get(f"{server.url}/metrics")

    assert response.status_code == 404
    assert response.json()["error"].startswith("metrics are off on this server")
    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=V2).status_code == 200


def test_every_metric_the_grafana_export_names_is_in_a_real_servers_metrics(
    home: Path,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
) -> None:
    out = tmp_path / "grafana"
    exported = subprocess.run(
        [*dockyard_command(), "monitor", "export", "grafana", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    dashboard = json.loads((out / "dockyard-dashboard.json").read_text())
    rules = yaml.safe_load((out / "dockyard-alerts.yml").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ] + [variable["query"] for variable in dashboard["templating"]["list"]]
    alerting = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {name for text in expressions + alerting for name in METRIC_NAME.findall(text)}
    assert len(alerting) >= 5
    assert len(dashboard["panels"]) >= 9
    assert {"dockyard_drift_detected", "dockyard_security_events_total"} <= named

    workspace = open_unprotected(home)
    version = register(
        workspace,
        logistic,
        Registration(
            "lr",
            reference_data=tabular_data[0][:50],
            alias="production",
            metrics={"accuracy": 0.9},
        ),
    )
    _record_monitoring(workspace, version.version)
    server = start_server(home, auth=True)
    for _ in range(5):
        httpx.post(
            f"{server.url}/v2/models/lr/infer",
            json=V2,
            headers={"Authorization": f"Bearer {server.admin_key}"},
        )
    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=V2).status_code == 401

    def missing() -> set[str]:
        return named - set(_scrape(server, server.admin_key))

    wait_for(lambda: not missing(), "every exported metric name shown", timeout_s=WAIT_S)


def _record_monitoring(workspace: Workspace, version: int) -> None:
    """One drift report and one live evaluation of ``lr``, as the drift and label jobs write."""
    now = datetime.now(UTC)
    with workspace.store.engine.begin() as connection:
        connection.execute(
            insert(drift_reports),
            [
                {
                    "model": "lr",
                    "version": version,
                    "computed_at": now,
                    "window": "24h",
                    "rows": 100,
                    "feature": "input-0",
                    "method": "psi",
                    "score": 0.3,
                    "p_value": None,
                    "drifted": True,
                    "details": {},
                }
            ],
        )
        connection.execute(
            insert(evaluations),
            [
                {
                    "model": "lr",
                    "version": version,
                    "computed_at": now,
                    "window": "24h",
                    "metric": "accuracy",
                    "value": 0.8,
                    "rows": 100,
                }
            ],
        )
    workspace.store.engine.dispose()
