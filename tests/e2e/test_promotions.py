"""Four-eyes promotion end to end, with real keys against a real server whose dockyard.toml has a
metric gate (``auc >= 0.99``): over HTTP, over the CLI with ``--url``, and over the CLI on the home
as operating-system users. A failing gate blocks the request by name, neither the registrant nor
the requester may approve, a direct move of ``production`` is refused with how to request it, an
approval by a second approver moves the alias (a server started afterwards serves the promoted
version), and the audit trail holds the request, the approval and the move with their actors."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

import dockyard
from clirun import run_cli
from dockyard.config import load_settings
from dockyard.errors import Conflict, Forbidden, InvalidInput
from dockyard.registry.tables import audit_log
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e

POLICY = '[governance]\nrequired_card_fields = []\nmetric_gates = ["auc >= 0.99"]\n'
GOOD, POOR = 0.995, 0.9
"""AUCs recorded at registration: one passes the gate, one does not."""
ROLES = {
    "alice": Role.ADMIN,  # registers the versions that pass the gate
    "bob": Role.DEPLOYER,  # registers, requests promotions
    "carol": Role.APPROVER,
    "erin": Role.ADMIN,  # requests, then tries to approve her own request
}


@dataclass
class Governed:
    server: Server
    home: Path
    config: Path
    workspace: Workspace
    keys: dict[str, str]
    model: Path
    reference: Path
    row: list[float]

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def register(self, who: str, name: str, auc: float) -> int:
        """Upload the model as ``who`` (POST /api/models); the new version's number."""
        with dockyard.Client(self.url, api_key=self.keys[who], timeout=120) as client:
            created = client.register(
                self.model, name, reference=self.reference, metrics={"auc": auc}
            )
        return int(created["version"])

    def trail(self, model: str) -> list[tuple[str, str, str]]:
        """``model``'s audit entries but registrations: actor, action, target, in order."""
        columns = (audit_log.c.actor, audit_log.c.action, audit_log.c.target)
        with self.workspace.store.engine.connect() as connection:
            rows = connection.execute(
                select(*columns)
                .where(audit_log.c.model == model, audit_log.c.action.not_like("%register%"))
                .order_by(audit_log.c.seq)
            ).all()
        return [tuple(row) for row in rows]


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Governed]:
    """A home under POLICY with a ``seed`` model to serve and a key per person in ROLES, served
    with keys required; a model file and reference rows to upload."""
    root = tmp_path_factory.mktemp("promotions")
    home, config = root / "home", root / "dockyard.toml"
    config.write_text(POLICY)
    x = tabular_data[0]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCKYARD_CONFIG", str(config))
        for name in ("DOCKYARD_URL", "DOCKYARD_API_KEY", "DOCKYARD_HOME"):
            env.delenv(name, raising=False)
        workspace = Workspace.open(load_settings({"home": home}))
        register(workspace, logistic, Registration("seed", reference_data=x[:50]))
        keys = {
            name: workspace.keys.create(local_user(), name, role)[1] for name, role in ROLES.items()
        }
        model = root / "model.skops"
        skops.io.dump(logistic, model)
        reference = root / "reference.csv"
        with reference.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([f"x{i}" for i in range(x.shape[1])])
            writer.writerows(x[:80].tolist())
        server = Server(home, ["seed:1", "--workers", "1"], root / "server.log", auth=True)
        try:
            yield Governed(server, home, config, workspace, keys, model, reference, x[0].tolist())
        finally:
            server.stop()
            workspace.store.close()


def test_over_http_with_real_keys(
    governed: Governed, start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = governed.register("alice", "fraud", GOOD)
    poor = governed.register("bob", "fraud", POOR)

    policy = governed.call("bob", "GET", f"/api/models/fraud/versions/{poor}/policy")
    blocked = governed.call(
        "bob", "POST", "/api/models/fraud/promotions", json={"version": poor, "alias": "production"}
    )
    direct = governed.call(
        "alice", "PUT", "/api/models/fraud/aliases/production", json={"version": good}
    )
    requested = governed.call(
        "bob",
        "POST",
        "/api/models/fraud/promotions",
        json={"version": good, "alias": "production", "comment": "beats the old rules"},
    )
    promotion = requested.json()["id"]
    by_deployer = governed.call("bob", "POST", f"/api/promotions/{promotion}/approve", json={})
    by_registrant = governed.call("alice", "POST", f"/api/promotions/{promotion}/approve")
    pending = governed.call("carol", "GET", "/api/promotions", params={"state": "pending"})
    approved = governed.call(
        "carol", "POST", f"/api/promotions/{promotion}/approve", json={"comment": "reviewed"}
    )

    assert policy.status_code == 200, policy.text
    assert policy.json()["passed"] is False
    gates = {gate["name"]: gate for gate in policy.json()["gates"]}
    assert gates["metric auc >= 0.99"] == {
        "name": "metric auc >= 0.99",
        "passed": False,
        "detail": "auc is 0.9",
    }
    assert blocked.status_code == 409, blocked.text
    assert "gate 'metric auc >= 0.99' failed" in blocked.json()["error"]
    assert direct.status_code == 403, direct.text
    assert f"`dockyard promote fraud {good} --to production`" in direct.json()["error"]
    assert "POST /api/models/fraud/promotions" in direct.json()["error"]
    assert requested.status_code == 201, requested.text
    assert requested.json()["state"] == "pending"
    assert requested.json()["requested_by"] == "key:bob"
    assert by_deployer.status_code == 403
    assert by_registrant.status_code == 403
    assert f"key:alice registered fraud:{good} and cannot decide" in by_registrant.json()["error"]
    assert [p["id"] for p in pending.json() if p["model"] == "fraud"] == [promotion]
    assert approved.status_code == 200, approved.text
    assert approved.json()["decided_by"] == "key:carol"
    model = governed.call("bob", "GET", "/api/models/fraud").json()
    assert model["aliases"] == {"production": good}
    assert governed.trail("fraud") == [
        ("key:bob", "promotion.request", f"promotion:{promotion}"),
        ("key:carol", "promotion.approve", f"promotion:{promotion}"),
        ("key:carol", "alias.move", "fraud@production"),
    ]

    monkeypatch.setenv("DOCKYARD_CONFIG", str(governed.config))
    production = start_server(governed.home, "fraud@production", "--workers", "1", auth=True)
    answer = httpx.post(
        f"{production.url}/v2/models/fraud/infer",
        headers={"Authorization": f"Bearer {governed.keys['alice']}"},
        json={
            "inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": governed.row}]
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == str(good)


def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("DOCKYARD_API_KEY", key)
    return run_cli(capsys, *args)


def test_over_the_cli_with_url_and_real_keys(
    governed: Governed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, url = governed.keys, ("--url", governed.url)
    good = governed.register("alice", "churn", GOOD)
    poor = governed.register("bob", "churn", POOR)

    code, out, _ = _cli(capsys, monkeypatch, keys["bob"], "policy", "check", f"churn:{poor}", *url)
    assert code == Conflict.exit_code
    assert "metric auc >= 0.99" in out
    assert "FAIL" in out
    assert "a gate fails" in out
    code, _, err = _cli(
        capsys, monkeypatch, keys["bob"], "promote", "churn", str(poor), "--to", "production", *url
    )
    assert code == Conflict.exit_code
    assert "gate 'metric auc >= 0.99' failed" in err
    code, _, err = _cli(
        capsys,
        monkeypatch,
        keys["alice"],
        "models",
        "alias",
        "churn",
        "production",
        str(good),
        *url,
    )
    assert code == Forbidden.exit_code
    assert "request the move with `dockyard promote churn" in err

    code, out, _ = _cli(
        capsys, monkeypatch, keys["erin"], "policy", "check", f"churn:{good}", "--json", *url
    )
    assert code == 0
    assert '"passed": true' in out
    code, out, err = _cli(
        capsys, monkeypatch, keys["erin"], "promote", "churn", str(good), "--to", "production", *url
    )
    assert code == 0, err
    first = out.split()[1]
    for who, reason in (("erin", "requested promotion"), ("alice", "registered churn")):
        code, _, err = _cli(capsys, monkeypatch, keys[who], "approvals", "approve", first, *url)
        assert code == Forbidden.exit_code
        assert reason in err
    code, _, err = _cli(capsys, monkeypatch, keys["carol"], "approvals", "reject", first, *url)
    assert code == InvalidInput.exit_code  # --comment is required
    code, out, err = _cli(
        capsys, monkeypatch, keys["carol"], "approvals", "reject", first, "--comment", "no", *url
    )
    assert code == 0, err
    assert f"churn:{good} stays off @production" in out

    code, out, err = _cli(
        capsys, monkeypatch, keys["bob"], "promote", "churn", str(good), "--to", "production", *url
    )
    assert code == 0, err
    second = out.split()[1]
    code, out, _ = _cli(
        capsys, monkeypatch, keys["carol"], "approvals", "list", "--model", "churn", *url
    )
    assert code == 0
    assert "pending" in out
    assert "rejected" in out
    code, out, err = _cli(
        capsys, monkeypatch, keys["carol"], "approvals", "approve", second, "--comment", "ok", *url
    )
    assert code == 0, err
    assert f"churn@production → churn:{good}" in out
    assert governed.call("bob", "GET", "/api/models/churn").json()["aliases"] == {
        "production": good
    }
    assert governed.trail("churn") == [
        ("key:erin", "promotion.request", f"promotion:{first}"),
        ("key:carol", "promotion.reject", f"promotion:{first}"),
        ("key:bob", "promotion.request", f"promotion:{second}"),
        ("key:carol", "promotion.approve", f"promotion:{second}"),
        ("key:carol", "alias.move", "churn@production"),
    ]


def test_over_the_cli_on_the_home_as_two_users(
    governed: Governed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_CONFIG", str(governed.config))
    monkeypatch.setenv("DOCKYARD_HOME", str(governed.home))
    monkeypatch.setenv("LOGNAME", "alice")
    code, _, err = run_cli(
        capsys,
        *("models", "register", str(governed.model), "--name", "local"),
        *("--reference", str(governed.reference), "--metric", f"auc={GOOD}"),
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "promote", "local", "1", "--to", "production")
    assert code == 0, err
    promotion = out.split()[1]
    code, _, err = run_cli(capsys, "approvals", "approve", promotion)
    assert code == Forbidden.exit_code
    assert "alice requested promotion" in err

    monkeypatch.setenv("LOGNAME", "carol")
    code, out, err = run_cli(capsys, "approvals", "approve", promotion)

    assert code == 0, err
    assert "local@production → local:1" in out
    assert governed.trail("local") == [
        ("alice", "promotion.request", f"promotion:{promotion}"),
        ("carol", "promotion.approve", f"promotion:{promotion}"),
        ("carol", "alias.move", "local@production"),
    ]


def test_an_invalid_policy_stops_serve_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(
        '[governance]\nprotected_aliases = ["production"]\nrequire_signatures = true\n'
    )
    env = {**os.environ, "DOCKYARD_CONFIG": str(config), "DOCKYARD_HOME": str(tmp_path / "h")}

    done = subprocess.run(
        [*dockyard_command(), "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == InvalidInput.exit_code
    assert done.stderr.strip().splitlines() == [
        "error: [governance] of dockyard.toml: unknown key 'require_signatures'; the keys are: "
        "allowed_formats, allowed_frameworks, challenger_beats_champion, metric_gates, "
        "personal_data, protected_aliases, require_signature, required_card_fields, retention"
    ]
