"""``models versions``, ``models show`` and ``models unarchive`` with ``--url`` against a real
server that requires keys: the same output as on the local home, unarchiving acts as the key and
needs the permission archiving needs, and the Client methods behind them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import dockyard
from clirun import run_cli as _cli
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server

pytestmark = pytest.mark.e2e


@dataclass
class Remote:
    server: Server
    home: Path
    keys: dict[str, str]
    """Role (and "scoped": a predictor of another model only) → key."""

    @property
    def url(self) -> str:
        return self.server.url

    def version(self, number: int) -> dict[str, object]:
        """``lr:NUMBER`` as the admin reads it from the API."""
        headers = {"Authorization": f"Bearer {self.server.admin_key}"}
        response = httpx.get(f"{self.url}/api/models/lr/versions/{number}", headers=headers)
        response.raise_for_status()
        found: dict[str, object] = response.json()
        return found


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Remote]:
    """A server requiring keys on a home with ``lr`` 1 (production, described), 2 (archived) and
    3, and a deployer, a predictor and a scoped predictor key."""
    root = tmp_path_factory.mktemp("versions")
    home = root / "home"
    x = tabular_data[0][:50]
    workspace = open_unprotected(home)
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=x, alias="production", description="first [try]"),
    )
    register(workspace, logistic, Registration("lr", reference_data=x, description="second"))
    register(workspace, logistic, Registration("lr", reference_data=x))
    workspace.store.archive("lr", 2)
    keys = {
        role.value: workspace.keys.create(local_user(), f"v-{role.value}", role)[1]
        for role in (Role.DEPLOYER, Role.PREDICTOR)
    }
    keys["scoped"] = workspace.keys.create(local_user(), "v-scoped", Role.PREDICTOR, ["other"])[1]
    workspace.store.engine.dispose()
    server = Server(home, [], root / "server.log", auth=True)
    try:
        yield Remote(server, home, keys)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _wide_and_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables laid out for 200 columns; the tests choose the server and key."""
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("DOCKYARD_URL", "DOCKYARD_API_KEY", "DOCKYARD_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_versions_and_show_print_what_the_local_commands_print(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.keys["predictor"])
    for command in (
        ("models", "versions", "lr"),
        ("models", "versions", "lr", "--json"),
        ("models", "show", "lr:1"),
        ("models", "show", "lr:2"),
    ):
        code, there, err = _cli(capsys, *command, "--url", remote.url)
        assert code == 0, (command, err)
        code, here, err = _cli(capsys, *command, "--home", str(remote.home))
        assert code == 0, (command, err)
        assert there == here, command
    _, listed, _ = _cli(capsys, "models", "versions", "lr", "--url", remote.url)
    rows = [line for line in listed.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "2", "3"]
    assert "production" in rows[0]
    assert rows[1].rstrip("│ ").endswith("yes")
    _, shown, _ = _cli(capsys, "models", "show", "lr:1", "--url", remote.url)
    assert "description: first [try]\n" in shown
    assert "archived: no\n" in shown


def test_versions_of_a_model_the_key_may_not_see_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.keys["scoped"])

    code, out, err = _cli(capsys, "models", "versions", "lr", "--url", remote.url)

    assert code == 3
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_unarchive_acts_as_a_key_allowed_to_archive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: Remote
) -> None:
    url = ("--url", remote.url)
    monkeypatch.setenv("DOCKYARD_API_KEY", remote.keys["predictor"])
    code, out, err = _cli(capsys, "models", "unarchive", "lr", "2", *url)
    assert code == 3, err
    assert out == ""
    assert remote.version(2)["archived"] is True

    monkeypatch.setenv("DOCKYARD_API_KEY", remote.keys["deployer"])
    code, out, err = _cli(capsys, "models", "unarchive", "lr", "2", *url)
    assert code == 0, err
    assert out == "unarchived lr:2\n"
    assert remote.version(2)["archived"] is False
    code, out, err = _cli(capsys, "models", "unarchive", "lr", "2", *url)
    assert (code, out) == (0, "unarchived lr:2\n"), err
    code, _, err = _cli(capsys, "models", "unarchive", "lr", "99", *url)
    assert code == 4
    assert "has no version 99" in err

    code, out, err = _cli(capsys, "models", "archive", "lr", "2", *url)
    assert code == 0, err
    assert remote.version(2)["archived"] is True


def test_client_lists_and_unarchives_versions(remote: Remote) -> None:
    with dockyard.Client(remote.url, api_key=remote.keys["deployer"]) as client:
        versions = client.list_versions("lr")
        assert [v["version"] for v in versions] == [1, 2, 3]
        assert versions[0]["aliases"] == ["production"]
        assert versions[0]["description"] == "first [try]"
        assert client.get_version("lr", 3)["archived"] is False
        assert client.archive("lr", 3)["archived"] is True
        live = client.unarchive("lr", 3)
        assert (live["version"], live["archived"]) == (3, False)
        assert client.unarchive("lr", 3) == live
        assert json.dumps(client.list_versions("lr")[2]) == json.dumps(live)
        with pytest.raises(dockyard.errors.NotFound):
            client.list_versions("ghost")
    with (
        dockyard.Client(remote.url, api_key=remote.keys["predictor"]) as reader,
        pytest.raises(dockyard.errors.Forbidden),
    ):
        reader.unarchive("lr", 3)
