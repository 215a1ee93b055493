"""``/api/audit`` and ``/api/audit/verify`` on a real server with real keys: changes made over the
API appear under the key that made them, the auditor reads and checks the trail, a predictor is
refused (and that refusal is audited too), and tampering shows in the check."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from dockyard.config import load_settings
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace
from servers import Server
from tables import csv_bytes

pytestmark = pytest.mark.e2e

FLUSH_WAIT_S = 5.0


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _audit(server: Server, key: str, **params: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/audit", params=params, headers=_bearer(key))
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()
    return listed


def test_the_auditor_reads_what_keys_did_over_the_api(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, auth=True)
    keys = Workspace.open(load_settings({"home": served}, env={})).keys
    _, auditor = keys.create(local_user(), "auditor", Role.AUDITOR)
    _, deployer = keys.create(local_user(), "deployer", Role.DEPLOYER)
    model_file = tmp_path / "model.skops"
    skops.io.dump(logistic, model_file)

    registered = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr", "alias": "staging"},
        files={
            "model": ("model.skops", model_file.read_bytes()),
            "reference": ("reference.csv", csv_bytes(tabular_data[0][:50])),
        },
        headers=_bearer(deployer),
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    created = httpx.post(
        f"{server.url}/api/keys",
        json={"name": "ops", "role": "approver"},
        headers=_bearer(server.admin_key),
    )
    assert created.status_code == 201, created.text
    new_key = created.json()

    by_deployer = _audit(server, auditor, actor="key:deployer")
    assert [(e["action"], e["target"]) for e in by_deployer] == [
        ("model.register", "lr:2"),
        ("alias.move", "lr@staging"),
    ]
    (key_created,) = _audit(server, auditor, actor="key:admin")
    assert key_created["action"] == "key.create"
    assert key_created["target"] == f"key:{new_key['key_id']}"
    assert key_created["details"]["role"] == "approver"
    assert new_key["key"] not in str(_audit(server, auditor))
    assert {e["model"] for e in _audit(server, auditor, model="lr")} == {"lr"}
    assert _audit(server, auditor, since="1h", limit="2") == _audit(server, auditor)[-2:]

    verified = httpx.get(f"{server.url}/api/audit/verify", headers=_bearer(auditor))
    assert verified.status_code == 200
    entries = len(_audit(server, auditor))
    assert verified.json() == {"valid": True, "entries": entries, "problems": []}


def test_a_predictor_is_refused_and_the_refusal_is_audited(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, auth=True)
    _, predictor = Workspace.open(load_settings({"home": served}, env={})).keys.create(
        local_user(), "predictor", Role.PREDICTOR
    )

    for path in ("/api/audit", "/api/audit/verify"):
        refused = httpx.get(server.url + path, headers=_bearer(predictor))
        assert refused.status_code == 403, refused.text
        assert "may not read audit" in refused.json()["error"]

    def refusals() -> list[dict[str, Any]]:
        found = _audit(server, server.admin_key, actor="key:predictor")
        return [e for e in found if e["action"] == "security.event"]

    deadline = time.monotonic() + FLUSH_WAIT_S
    while not refusals() and time.monotonic() < deadline:
        time.sleep(0.1)
    refusal = refusals()[0]
    assert refusal["details"]["kind"] == "forbidden"
    assert refusal["target"].startswith("GET /api/audit")


def test_a_scoped_auditor_names_one_of_its_models(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, auth=True)
    _, scoped = Workspace.open(load_settings({"home": served}, env={})).keys.create(
        local_user(), "lr-auditor", Role.AUDITOR, ["lr"]
    )

    everything = httpx.get(f"{server.url}/api/audit", headers=_bearer(scoped))
    assert everything.status_code == 403
    assert "?model= (lr)" in everything.json()["error"]
    other = httpx.get(f"{server.url}/api/audit", params={"model": "churn"}, headers=_bearer(scoped))
    assert other.status_code == 403
    assert {e["model"] for e in _audit(server, scoped, model="lr")} == {"lr"}
    bad = httpx.get(
        f"{server.url}/api/audit", params={"model": "lr", "since": "soon"}, headers=_bearer(scoped)
    )
    assert bad.status_code == 400
    assert "must be a duration such as 1h" in bad.json()["error"]


def test_verify_over_http_names_a_tampered_entry(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, auth=True)
    with closing(sqlite3.connect(served / "dockyard.db")) as connection, connection:
        connection.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 1")

    answer = httpx.get(f"{server.url}/api/audit/verify", headers=_bearer(server.admin_key))

    assert answer.status_code == 200
    body = answer.json()
    assert body["valid"] is False
    assert [(p["seq"], p["kind"]) for p in body["problems"]] == [(1, "edited")]
