"""Every mistake in the command line itself is a usage error: the usage line, an error naming the
option as typed, exit code 2 — through the installed console script, as a user meets it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from servers import dockyard_command

CASES = [
    ([], "Usage: dockyard [OPTIONS] COMMAND", None),
    (["models"], "Usage: dockyard models [OPTIONS] COMMAND", None),
    (["nosuch"], "Usage: dockyard [OPTIONS]", "No such command 'nosuch'"),
    (["predict", "x", "--bogus"], "Usage: dockyard predict", "No such option: --bogus"),
    (["predict", "x"], "Usage: dockyard predict", "Missing option '--input'"),
    (["models", "register"], "Usage: dockyard models register", "Missing argument 'model'"),
    (["serve", "--port", "notaport"], "Usage: dockyard serve", "Invalid value for '--port'"),
    (
        ["models", "register", "m.skops", "-n", "x", "--metric", "auc"],
        "Usage: dockyard models register",
        "metric 'auc' must look like key=value",
    ),
    (
        ["models", "register", "m.skops", "-n", "x", "--metric", "auc=high"],
        "Usage: dockyard models register",
        "metric 'auc' must be a number, got 'high'",
    ),
    (
        ["models", "alias", "fraud", "staging"],
        "Usage: dockyard models alias",
        "give the VERSION to point the alias at, or --delete",
    ),
    (["models", "update", "fraud"], "Usage: dockyard models update", "give --description"),
    (
        ["models", "register", "m.skops", "-n", "x"],
        "Usage: dockyard models register",
        "give --reference FILE: rows like the training data",
    ),
]


@pytest.mark.parametrize(("args", "usage", "error"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_command_line_mistake_is_a_usage_error(
    args: list[str], usage: str, error: str | None, tmp_path: Path
) -> None:
    done = subprocess.run(
        [*dockyard_command(), *args],
        env={**os.environ, "DOCKYARD_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    first = next(line.strip() for line in output.splitlines() if line.strip())
    assert first.startswith(usage), output
    assert "unexpected" not in output
    assert "Traceback" not in output
    if error is not None:
        assert error in done.stderr, output


UNREACHABLE_DATABASE = "postgresql+psycopg://dockyard:s3cret@127.0.0.1:1/registry"
EXIT_CASES = [
    (
        ["models", "list"],
        {"DOCKYARD_DATABASE_URL": UNREACHABLE_DATABASE},
        7,
        "error: cannot open registry database postgresql+psycopg://dockyard:***@127.0.0.1:1/",
    ),
    (
        ["predict", "fraud", "--input", "rows.csv", "--output", "missing/scores.csv"],
        {},
        2,
        "error: cannot write missing/scores.csv: folder missing does not exist",
    ),
    (
        ["predict", "fraud", "--input", "rows.csv", "--output", "scores.xlsx"],
        {},
        2,
        "error: cannot write scores.xlsx: unsupported file type '.xlsx'; use .csv, .json, .parquet",
    ),
    (
        ["serve", "--backup-every", "1x"],
        {},
        2,
        "error: backup_every: duration '1x' must look like 30s",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "code", "first"), EXIT_CASES, ids=[" ".join(c[0]) for c in EXIT_CASES]
)
def test_an_error_exits_with_the_code_the_readme_gives(
    args: list[str], env: dict[str, str], code: int, first: str, tmp_path: Path
) -> None:
    """Checked before any work: the output's folder and type are refused before the model loads
    (no model named ``fraud`` exists here)."""
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    done = subprocess.run(
        [*dockyard_command(), *args],
        cwd=tmp_path,
        env={**os.environ, "DOCKYARD_HOME": str(tmp_path / "home"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines()[0].startswith(first), done.stderr
    assert "s3cret" not in done.stderr
    assert not (tmp_path / "scores.xlsx").exists()


def test_only_a_genuine_bug_is_unexpected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error boundary's last resort: a bug in Dockyard (here, one planted where every
    registry command goes) is one line naming it and how to see the traceback, exit 1."""
    from dockyard.cli.main import run
    from dockyard.services.workspace import Workspace

    def planted_bug(*_: object, **__: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(Workspace, "open", planted_bug)
    monkeypatch.delenv("DOCKYARD_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        run(["models", "list", "--home", str(tmp_path)])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "error: unexpected ZeroDivisionError: planted (set DOCKYARD_DEBUG=1 for a traceback)\n"
    )

    monkeypatch.setenv("DOCKYARD_DEBUG", "1")
    with pytest.raises(ZeroDivisionError, match="planted"):
        run(["models", "list", "--home", str(tmp_path)])
