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
