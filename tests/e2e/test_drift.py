"""Acceptance: live traffic whose distribution moved for some features, sent to a real server as
real requests and logged by it, is flagged as drifted for exactly those features and not the
others — by the server's own periodic computation, by ``GET /api/models/{name}/drift``, and by
``dockyard monitor drift`` on the home and through the server."""

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

from dockyard.monitoring.drift import latest_drift
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e

FEATURES = 12
SHIFTED = {"x3": 0.8, "x8": -0.6}
"""Features moved in live traffic, by this many reference standard deviations."""
REQUESTS = 40
ROWS = 50
WAIT_S = 60.0


def inputs_drifted(report: dict[str, Any]) -> set[str]:
    return {name for name in report["drifted"] if not name.startswith("output.")}


def wait_for(condition: Callable[[], Any], what: str, server: Server) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; the server said:\n{server.output()}")


def test_drift_is_flagged_for_exactly_the_moved_features(
    home: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(5000, FEATURES))
    labels = (reference[:, 0] - reference[:, 1] + reference[:, 3] > 0).astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(reference, labels)
    workspace = open_unprotected(home)
    register(workspace, model, Registration("fraud", reference_data=reference, alias="production"))
    workspace.store.engine.dispose()
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    monkeypatch.setenv("DOCKYARD_DRIFT_INTERVAL_S", "1")
    monkeypatch.setenv("DOCKYARD_DRIFT_WINDOW", "1h")
    server = start_server(home, "--workers", "1", auth=True)
    bearer = {"Authorization": f"Bearer {server.admin_key}"}

    live = rng.normal(size=(REQUESTS * ROWS, FEATURES))
    for name, shift in SHIFTED.items():
        live[:, int(name[1:])] += shift
    for batch in np.split(live, REQUESTS):
        body = {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(batch.shape),
                    "datatype": "FP64",
                    "data": batch.ravel().tolist(),
                }
            ]
        }
        answer = httpx.post(f"{server.url}/v2/models/fraud/infer", json=body, headers=bearer)
        assert answer.status_code == 200, answer.text

    # The server's periodic job, once the log holds every row sent.
    def periodic() -> list[Any]:
        rows = latest_drift(workspace.store.engine, "fraud")
        return rows if rows and rows[0].rows == len(live) else []

    stored = wait_for(periodic, "the server's drift report of every row sent", server)
    assert {row.feature for row in stored if row.drifted and "." not in row.feature} == set(SHIFTED)
    assert {row.feature for row in stored} >= {f"x{j}" for j in range(FEATURES)}
    assert {"output.predict", "output.predict_proba[1]"} <= {row.feature for row in stored}

    # On demand over HTTP, for a caller who may read the model.
    answer = httpx.get(
        f"{server.url}/api/models/fraud/drift", params={"window": "2000rows"}, headers=bearer
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["model"], report["version"], report["rows"]) == ("fraud", 1, len(live))
    assert inputs_drifted(report) == set(SHIFTED)
    assert httpx.get(f"{server.url}/api/models/fraud/drift").status_code == 401
    refused = httpx.get(
        f"{server.url}/api/models/fraud/drift", params={"window": "soon"}, headers=bearer
    )
    assert refused.status_code == 400
    assert "drift window 'soon'" in refused.json()["error"]

    # The command line, on the home and through the server.
    env = {"DOCKYARD_HOME": str(home), "COLUMNS": "200"}
    local = run_dockyard(["monitor", "drift", "fraud", "--window", "1h", "--json"], env)
    assert inputs_drifted(json.loads(local)) == set(SHIFTED)
    remote = run_dockyard(
        ["monitor", "drift", "fraud@production", "--json", "--url", server.url],
        {"DOCKYARD_API_KEY": server.admin_key},
    )
    assert inputs_drifted(json.loads(remote)) == set(SHIFTED)
    table = run_dockyard(["monitor", "drift", "fraud"], env)
    flagged = {
        line.split("│")[1].strip()
        for line in table.splitlines()
        if line.count("│") > 5 and "yes" in line.split("│")[5]
    }
    assert {name for name in flagged if "." not in name} == set(SHIFTED)


def run_dockyard(args: list[str], env: dict[str, str]) -> str:
    """``dockyard ARGS`` in a process of its own; its standard output."""
    done = subprocess.run(
        [*dockyard_command(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
