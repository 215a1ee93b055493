"""The registry commands with ``--url`` (or ``DOCKYARD_URL``) and ``DOCKYARD_API_KEY`` against a
real server that requires keys: every state-changing command acts as the key (the server records
``key:<name>``), a key without the permission is exit code 3 with one error line, no key is exit
code 3 before any request, and the output has the same shape as the local command's."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

import dockyard
from clirun import run_cli as _cli
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server

pytestmark = pytest.mark.e2e


@dataclass
class Remote:
    server: Server
    home: Path
    model: Path
    reference: Path

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, path: str) -> httpx.Response:
        """GET ``path`` as the admin, to check what a command did on the server."""
        headers = {"Authorization": f"Bearer {self.server.admin_key}"}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Remote]:
    """A server requiring keys on a home with ``lr`` version 1 (alias production), and a model
    file with reference data to upload."""
    root = tmp_path_factory.mktemp("remote")
    home = root / "home"
    x = tabular_data[0]
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=x[:50], alias="production"))
    workspace.store.engine.dispose()
    model = root / "model.skops"
    skops.io.dump(logistic, model)
    reference = root / "reference.csv"
    with reference.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"x{i}" for i in range(x.shape[1])])
        writer.writerows(x[:80].tolist())
    server = Server(home, [], root / "server.log", auth=True)
    try:
        yield Remote(server, home, model, reference)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose the server and key; none leaks in from the environment."""
    for name in ("DOCKYARD_URL", "DOCKYARD_API_KEY", "DOCKYARD_HOME"):
        monkeypatch.delenv(name, raising=False)


def _new_key(
    capsys: pytest.CaptureFixture[str], remote: Remote, name: str, role: str, *extra: str
) -> tuple[str, str]:
    """``keys create --url`` (as whatever key is set); the new key and its id."""
    code, out, err = _cli(
        capsys, "keys", "create", "--name", name, "--role", role, *extra, "--url", remote.url
    )
    assert code == 0, err
    key = out.strip()
    assert key.startswith("dk_")
    assert f"({name}, {role}, " in err
    _wait_accepted(remote, key)
    return key, err.split("created key ", 1)[1].split(" ", 1)[0]


def _wait_accepted(remote: Remote, key: str) -> None:
    """Wait for the server to know a new key: workers reload their keys every second."""
    deadline = time.monotonic() + 5
    headers = {"Authorization": f"Bearer {key}"}
    while httpx.get(f"{remote.url}/v2", headers=headers, timeout=30).status_code == 401:
        assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
        time.sleep(0.1)


def test_state_changing_commands_act_as_the_remote_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    url = ("--url", remote.url)
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.server.admin_key)
    deployer, deployer_id = _new_key(capsys, remote, "ci-bot", "deployer", "--expires", "30d")
    created = {k["key_id"]: k for k in remote.api("/api/keys").json()}[deployer_id]
    assert created["created_by"] == "key:admin"
    assert created["role"] == "deployer"
    assert created["expires_at"] is not None

    monkeypatch.setenv("DOCKYARD_API_KEY", deployer)
    code, out, err = _cli(
        capsys,
        "models",
        "register",
        str(remote.model),
        "-n",
        "lr",
        "--reference",
        str(remote.reference),
        "--metric",
        "auc=0.9",
        "--tag",
        "team=risk",
        "--description",
        "retrained",
        "--alias",
        "staging",
        *url,
    )
    assert code == 0, err
    assert out.startswith("registered lr:2 @staging (sklearn, sha256 ")
    version = remote.api("/api/models/lr/versions/2").json()
    assert version["created_by"] == "key:ci-bot"
    assert version["metrics"] == {"auc": 0.9}
    assert version["tags"] == {"team": "risk"}
    assert version["description"] == "retrained"
    assert version["lineage"]["data_rows"] == 80

    code, out, err = _cli(
        capsys, "models", "update", "lr", "--description", "fraud", "--tag", "owner=risk", *url
    )
    assert code == 0, err
    assert out.strip() == "lr: 'fraud', tags {'owner': 'risk'}"
    model = remote.api("/api/models/lr").json()
    assert (model["description"], model["tags"]) == ("fraud", {"owner": "risk"})

    code, out, err = _cli(capsys, "models", "alias", "lr", "canary", "2", *url)
    assert code == 0, err
    assert out.strip() == "lr@canary → lr:2"
    assert remote.api("/api/models/lr").json()["aliases"]["canary"] == 2
    for alias in ("canary", "staging"):
        code, out, err = _cli(capsys, "models", "alias", "lr", alias, "--delete", *url)
        assert code == 0, err
        assert out.strip() == f"removed lr@{alias}"
    assert remote.api("/api/models/lr").json()["aliases"] == {"production": 1}

    code, out, err = _cli(capsys, "models", "archive", "lr", "2", *url)
    assert code == 0, err
    assert out.strip() == "archived lr:2"
    assert remote.api("/api/models/lr/versions/2").json()["archived"] is True

    monkeypatch.setenv("DOCKYARD_API_KEY", remote.server.admin_key)
    code, out, err = _cli(capsys, "keys", "rotate", "ci-bot", "--grace", "1h", *url)
    assert code == 0, err
    rotated = out.strip()
    assert rotated.startswith("dk_")
    assert rotated != deployer
    new_id = err.split("created key ", 1)[1].split(" ", 1)[0]
    keys = {k["key_id"]: k for k in remote.api("/api/keys").json()}
    assert keys[new_id]["created_by"] == "key:admin"
    assert keys[deployer_id]["state"] == "active"  # the grace hour

    code, out, err = _cli(capsys, "keys", "revoke", new_id, *url)
    assert code == 0, err
    assert out.strip() == f"revoked key {new_id} (ci-bot)"
    assert {k["key_id"]: k for k in remote.api("/api/keys").json()}[new_id]["state"] == "revoked"

    code, out, err = _cli(capsys, "keys", "list", "--all", *url)
    assert code == 0, err
    assert new_id[:7] in out  # the table may be cut to the terminal's width
    assert "revoked" in out


def test_reading_commands_print_what_the_local_ones_print(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.server.admin_key)
    for command in (
        ("models", "list"),
        ("models", "show", "lr"),
        ("models", "show", "lr@production"),
        ("models", "show", "lr:1", "--json"),
        ("keys", "list", "--all"),
    ):
        code, there, err = _cli(capsys, *command, "--url", remote.url)
        assert code == 0, err
        code, here, err = _cli(capsys, *command, "--home", str(remote.home))
        assert code == 0, err
        assert there == here, command
    code, _, err = _cli(capsys, "models", "show", "lr@nope", "--url", remote.url)
    assert code == 4
    assert err.startswith("error: ")


def test_dockyard_url_stands_for_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.server.admin_key)
    monkeypatch.setenv("DOCKYARD_URL", remote.url)
    code, out, err = _cli(capsys, "models", "show", "lr:1", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 1
    code, _, err = _cli(capsys, "models", "list", "--home", str(remote.home))
    assert code == 2
    assert "not both" in err


def test_a_key_without_the_permission_is_exit_code_3_and_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.server.admin_key)
    predictor, _ = _new_key(capsys, remote, "reader", "predictor")
    monkeypatch.setenv("DOCKYARD_API_KEY", predictor)
    url = ("--url", remote.url)
    commands = [
        (
            "models",
            "register",
            str(remote.model),
            "-n",
            "lr",
            "--reference",
            str(remote.reference),
            *url,
        ),
        ("models", "update", "lr", "--description", "nope", *url),
        ("models", "alias", "lr", "staging", "1", *url),
        ("models", "alias", "lr", "production", "--delete", *url),
        ("models", "archive", "lr", "1", *url),
        ("keys", "create", "--name", "sneaky", "--role", "admin", *url),
        ("keys", "rotate", "reader", *url),
        ("keys", "revoke", "reader", *url),
        ("keys", "list", *url),
    ]
    for command in commands:
        code, out, err = _cli(capsys, *command)
        assert code == 3, (command, err)
        assert out == ""
        assert err.startswith("error: "), command
        assert err.count("\n") == 1, err
    assert remote.api("/api/models/lr").json()["aliases"]["production"] == 1
    names = [k["name"] for k in remote.api("/api/keys").json() if k["state"] == "active"]
    assert "sneaky" not in names
    assert "reader" in names

    monkeypatch.setenv("DOCKYARD_API_KEY", "dk_000000000000_wrong")
    code, _, err = _cli(capsys, "models", "list", *url)
    assert code == 3
    assert err == "error: invalid API key\n"


def test_url_without_a_key_is_exit_code_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Nothing listens there: the command stops before any request.
    code, out, err = _cli(
        capsys, "models", "alias", "lr", "staging", "1", "--url", "http://x.invalid"
    )
    assert code == 3
    assert out == ""
    assert err == "error: set DOCKYARD_API_KEY to use --url\n"
    code, _, err = _cli(
        capsys, "keys", "create", "--name", "a", "--role", "admin", "--url", "http://x.invalid"
    )
    assert code == 3
    assert "DOCKYARD_API_KEY" in err


def test_client_manages_keys_and_reads_security_events(remote: Remote) -> None:
    with dockyard.Client(remote.url, api_key=remote.server.admin_key) as admin:
        created = admin.create_key("events-bot", "auditor", expires=timedelta(hours=2))
        assert created["key"].startswith("dk_")
        assert created["created_by"] == "key:admin"
        rotated = admin.rotate_key(created["key_id"], grace=timedelta(minutes=5))
        assert rotated["name"] == "events-bot"
        assert rotated["key_id"] != created["key_id"]
        states = {k["key_id"]: k["state"] for k in admin.list_keys()}
        assert states[created["key_id"]] == "active"  # the grace minutes
        assert admin.revoke_key(rotated["key_id"])["state"] == "revoked"
        stranger = dockyard.Client(remote.url, api_key="dk_000000000000_wrong")
        with stranger, pytest.raises(dockyard.errors.Unauthenticated):
            stranger.list_models()
        deadline = time.monotonic() + 5
        while not any(e["status"] == 401 for e in admin.security_events(since="1h")):
            assert time.monotonic() < deadline, "the refusal was not recorded within 5 s"
            time.sleep(0.2)
        assert len(admin.security_events(limit=1)) == 1
        with pytest.raises(dockyard.errors.NotFound):
            admin.get_version("lr", 99)
        with pytest.raises(dockyard.errors.InvalidInput):
            admin.create_key("x", "emperor")
