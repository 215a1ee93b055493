"""Secure by default, against real servers: keys required on every route but the health probes,
the first admin key, keys taking effect and ending while the server runs, ``--no-auth`` only on
loopback, code-running uploads only for an admin on a server that allows them, and no key text in
logs or answers."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.config import load_settings
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace
from servers import Server, dockyard_command
from tables import csv_bytes

pytestmark = pytest.mark.e2e

ROW = {"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [0.0] * 30}]}
REFRESH_WAIT_S = 5.0
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _workspace(home: Path) -> Workspace:
    return Workspace.open(load_settings({"home": home}, env={}))


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _eventually(check: Callable[[], bool]) -> bool:
    """Whether ``check`` holds within the servers' key refresh (about a second, here up to 5)."""
    deadline = time.monotonic() + REFRESH_WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_the_first_secured_start_creates_a_private_admin_key(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, auth=True)
    key_file = served / "secrets" / "admin-key"

    assert key_file.stat().st_mode & 0o777 == 0o600
    assert f"created the first admin API key in {key_file}" in server.output()
    assert server.admin_key not in server.output()
    server.stop()
    again = start_server(served, auth=True)
    assert "created the first admin" not in again.output()
    admins = [r for r in _workspace(served).keys.all() if r.role is Role.ADMIN]
    assert len(admins) == 1


def test_every_route_but_the_probes_needs_a_key(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, auth=True)
    admin = server.admin_key

    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 200
    refused = [
        httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW),
        httpx.post(f"{server.url}/v1/models/lr:predict", json={"instances": [[0.0] * 30]}),
        httpx.get(f"{server.url}/v2/models/lr"),
        httpx.get(f"{server.url}/v2"),
        httpx.get(f"{server.url}/api/models"),
        httpx.get(f"{server.url}/docs"),
        httpx.get(f"{server.url}/openapi.json"),
        httpx.get(f"{server.url}/no/such/route"),
        httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW, headers=_bearer("dk_wrong")),
        httpx.get(f"{server.url}/api/models", headers={"X-API-Key": admin[:-2]}),
        httpx.get(f"{server.url}/api/models", headers={"Authorization": f"Basic {admin}"}),
    ]
    for answer in refused:
        assert answer.status_code == 401, (answer.request.url, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]
        assert admin not in answer.text

    # A refused request's body is never read: the connection closes instead of draining it.
    assert refused[0].headers["connection"] == "close"
    assert refused[4].headers["connection"] == "close"

    inferred = httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW, headers=_bearer(admin))
    assert inferred.status_code == 200, inferred.text
    listed = httpx.get(f"{server.url}/api/models", headers={"X-API-Key": admin})
    assert listed.status_code == 200
    assert listed.json()[0]["name"] == "lr"
    assert httpx.get(f"{server.url}/no/such/route", headers=_bearer(admin)).status_code == 404
    for answer in (inferred, listed, refused[0], refused[4]):
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value
    assert admin not in server.output()


def test_keys_take_effect_and_end_while_the_server_runs(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--workers", "2", auth=True)
    workspace = _workspace(served)
    record, key = workspace.keys.create(local_user(), "svc", Role.PREDICTOR, ["lr"])
    _, churn_key = workspace.keys.create(local_user(), "churn-svc", Role.PREDICTOR, ["churn"])
    _, short_key = workspace.keys.create(
        local_user(), "short", Role.PREDICTOR, expires_in=timedelta(seconds=2)
    )

    def infer(with_key: str) -> int:
        url = f"{server.url}/v2/models/lr/infer"
        return httpx.post(url, json=ROW, headers=_bearer(with_key)).status_code

    # A worker that meets a key id it does not know reloads the keys at once: a key works on
    # every worker from its first request, not only after the refresh interval.
    assert [infer(key) for _ in range(6)] == [200] * 6
    scoped = httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW, headers=_bearer(churn_key))
    assert scoped.status_code == 403
    assert "not allowed to use model 'lr'" in scoped.json()["error"]
    assert httpx.get(f"{server.url}/api/keys", headers=_bearer(key)).status_code == 403

    def refused(with_key: str, why: str) -> bool:
        """Six requests in a row refused (whichever worker takes each), saying ``why``."""
        url = f"{server.url}/v2/models/lr/infer"
        answers = [httpx.post(url, json=ROW, headers=_bearer(with_key)) for _ in range(6)]
        return all(a.status_code == 401 and why in a.json()["error"] for a in answers)

    workspace.keys.revoke(local_user(), record.key_id)
    assert _eventually(lambda: refused(key, "revoked"))
    assert _eventually(lambda: refused(short_key, "expired"))
    for text in (key, churn_key, short_key):
        assert text not in server.output()


def test_no_auth_is_refused_off_loopback_and_warned_on_it(
    served: Path, start_server: Callable[..., Server]
) -> None:
    refused = subprocess.run(
        [*dockyard_command(), "serve", "--host", "0.0.0.0", "--no-auth"],
        env={**os.environ, "DOCKYARD_HOME": str(served)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --no-auth is accepted only on a loopback address, not 0.0.0.0: anyone who "
        "reaches the port could register models and move aliases"
    ]

    server = start_server(served)  # --no-auth on 127.0.0.1
    assert "authentication is off" in server.output()
    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW).status_code == 200


def _pickle_upload(
    server: Server, key: str, x: np.ndarray, model: LogisticRegression
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/models",
        data={"name": "pickled", "allow_pickle": "true"},
        files={
            "model": ("model.pkl", pickle.dumps(model)),
            "reference": ("r.csv", csv_bytes(x[:20])),
        },
        headers=_bearer(key),
        timeout=60,
    )


def test_a_pickle_over_http_needs_an_admin_and_the_server_setting(
    served: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x = tabular_data[0]
    _, deployer = _workspace(served).keys.create(local_user(), "ci", Role.DEPLOYER)
    server = start_server(served, auth=True)

    by_deployer = _pickle_upload(server, deployer, x, logistic)
    assert by_deployer.status_code == 403
    assert "only an admin may send them" in by_deployer.json()["error"]
    setting_off = _pickle_upload(server, server.admin_key, x, logistic)
    assert setting_off.status_code == 403
    assert "allow_pickle_uploads setting is off" in setting_off.json()["error"]
    server.stop()

    monkeypatch.setenv("DOCKYARD_ALLOW_PICKLE_UPLOADS", "true")
    allowed = start_server(served, auth=True)
    created = _pickle_upload(allowed, allowed.admin_key, x, logistic)
    assert created.status_code == 201, created.text
    assert created.json()["allow_pickle"] is True
    assert created.json()["created_by"] == "key:admin"
    by_deployer = _pickle_upload(allowed, deployer, x, logistic)
    assert by_deployer.status_code == 403
