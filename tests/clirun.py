"""The ``dockyard`` CLI run in-process, through the same error boundary as the console script."""

from __future__ import annotations

import pytest

from dockyard.cli.main import run


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``dockyard ARGS``: the exit code, stdout and stderr."""
    try:
        run(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
