"""The registry as users look at it, on a local home: ``models versions``, what ``models show``
prints, ``models unarchive``, and help that shows what the commands take."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
import typer
from sklearn.linear_model import LogisticRegression

from clirun import run_cli as _cli
from dockyard.cli.main import app
from servers import dockyard_command
from tables import write_csv

WIDE = "200"

pytestmark = pytest.mark.usefixtures("unprotected_config")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables and help are laid out for 200 columns, so no cell is cut or wrapped."""
    monkeypatch.setenv("COLUMNS", WIDE)
    for name in ("DOCKYARD_URL", "DOCKYARD_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lr(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> tuple[str, str]:
    """A home with ``lr`` versions 1 (alias production, described) and 2 (archived); the
    ``--home`` arguments."""
    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    reference = write_csv(tmp_path / "reference.csv", tabular_data[0][:50])
    h = ("--home", str(home))
    register = ("models", "register", str(model), "-n", "lr", "--reference", str(reference))
    code, _, err = _cli(
        capsys, *register, "--alias", "production", "--description", "first [try]", *h
    )
    assert code == 0, err
    code, _, err = _cli(capsys, *register, *h)
    assert code == 0, err
    code, _, err = _cli(capsys, "models", "archive", "lr", "2", *h)
    assert code == 0, err
    return h


def _cells(line: str, bar: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip(bar).split(bar)]


def test_versions_lists_every_version(
    capsys: pytest.CaptureFixture[str], lr: tuple[str, str]
) -> None:
    _, shown, _ = _cli(capsys, "models", "show", "lr:1", "--json", *lr)
    created = datetime.fromisoformat(json.loads(shown)["created_at"]).astimezone(UTC)
    me = json.loads(shown)["created_by"]

    code, out, err = _cli(capsys, "models", "versions", "lr", *lr)

    assert code == 0, err
    header = next(_cells(line, "┃") for line in out.splitlines() if line.startswith("┃"))
    rows = [_cells(line, "│") for line in out.splitlines() if line.startswith("│")]
    assert header == ["version", "created", "created by", "framework", "aliases", "archived"]
    assert rows == [
        ["1", f"{created:%Y-%m-%d %H:%M:%S} UTC", me, "sklearn", "production", "no"],
        ["2", rows[1][1], me, "sklearn", "", "yes"],
    ]
    assert rows[1][1] >= rows[0][1]


def test_versions_as_json(capsys: pytest.CaptureFixture[str], lr: tuple[str, str]) -> None:
    code, out, err = _cli(capsys, "models", "versions", "lr", "--json", *lr)

    assert code == 0, err
    versions = json.loads(out)
    assert [(v["version"], v["aliases"], v["archived"]) for v in versions] == [
        (1, ["production"], False),
        (2, [], True),
    ]
    assert versions[0]["description"] == "first [try]"


def test_versions_of_an_unknown_model_is_exit_code_4(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    code, out, err = _cli(capsys, "models", "versions", "ghost", "--home", str(home))

    assert code == 4
    assert out == ""
    assert err == "error: model 'ghost' is not registered\n"


def test_show_prints_the_description_and_archived_state(
    capsys: pytest.CaptureFixture[str], lr: tuple[str, str]
) -> None:
    _, first, _ = _cli(capsys, "models", "show", "lr:1", *lr)
    _, second, _ = _cli(capsys, "models", "show", "lr:2", *lr)

    # The description is the user's text: brackets are printed, not read as markup.
    assert "description: first [try]\n" in first
    assert "archived: no\n" in first
    assert "description:" not in second
    assert "archived: yes" in second


def test_unarchive(capsys: pytest.CaptureFixture[str], lr: tuple[str, str]) -> None:
    code, _, err = _cli(capsys, "models", "alias", "lr", "staging", "2", *lr)
    assert code == 5
    assert "archived" in err

    code, out, err = _cli(capsys, "models", "unarchive", "lr", "2", *lr)

    assert code == 0, err
    assert out == "unarchived lr:2\n"
    _, out, _ = _cli(capsys, "models", "show", "lr:2", "--json", *lr)
    assert json.loads(out)["archived"] is False
    code, out, err = _cli(capsys, "models", "alias", "lr", "staging", "2", *lr)
    assert code == 0, err
    # Unarchiving a live version changes nothing, as archiving an archived one does.
    before = _cli(capsys, "models", "versions", "lr", "--json", *lr)[1]
    code, out, err = _cli(capsys, "models", "unarchive", "lr", "1", *lr)
    assert code == 0, err
    assert out == "unarchived lr:1\n"
    assert _cli(capsys, "models", "versions", "lr", "--json", *lr)[1] == before
    code, _, err = _cli(capsys, "models", "unarchive", "lr", "9", *lr)
    assert code == 4
    assert "has no version 9" in err


def test_show_help_names_the_reference_forms() -> None:
    done = subprocess.run(
        [*dockyard_command(), "models", "show", "--help"],
        env={**os.environ, "COLUMNS": WIDE},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert "NAME[@ALIAS|:VERSION]" in done.stdout


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group under ``command`` (Typer's own copy of Click: no isinstance)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_walk_reaches_every_command() -> None:
    assert {("models", "versions"), ("models", "unarchive"), ("serve",), ("keys", "create")} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "dockyard" for p in COMMANDS])
def test_help_shows_no_bool_placeholder(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    code, out, err = _cli(capsys, *path, "--help")

    assert code == 0, err
    assert "--help" in out
    assert "<bool>" not in out
