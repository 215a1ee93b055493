"""Dockyard on every supported Python installed here (issue 17): one core install each.

The interpreters are those of ``noxfile.py``'s ``PYTHONS`` that answer by name (``python3.12``…;
``make bench`` selects pyenv's as ``make test-pythons`` does, through ``.ci/pythons.sh``). Each
gets a core-only install of this checkout in ``benchmarks/.venv-core-<version>`` (the running
interpreter's is ``core_env.VENV``, which the start-up rows use too), and the ``pythons``
scenario serves the small model from each, side by side.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import core_env

ASK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Python:
    """One interpreter: its ``PYTHONS`` name, full version and real path (not pyenv's shim)."""

    name: str
    version: str
    executable: str


def supported() -> list[str]:
    """``PYTHONS`` of ``noxfile.py``, what ``make test-pythons`` runs the suite on (read, not
    imported: importing registers nox's sessions)."""
    path = core_env.BENCH_DIR.parent / "noxfile.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["PYTHONS"]:
            return [str(name) for name in ast.literal_eval(node.value)]
    raise RuntimeError(f"{path} has no PYTHONS")


def installed() -> list[Python]:
    """Every supported interpreter that runs here, by name."""
    found = []
    for name in supported():
        try:
            answer = subprocess.run(
                [
                    f"python{name}",
                    "-c",
                    "import platform, sys; print(platform.python_version(), sys.executable)",
                ],
                capture_output=True,
                text=True,
                timeout=ASK_TIMEOUT_S,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        version, executable = answer.stdout.split(maxsplit=1)
        found.append(Python(name, version, executable.strip()))
    return found


def dockyard(python: Python) -> Path:
    """The ``dockyard`` executable of a core install of this checkout on ``python``."""
    if python.name == f"{sys.version_info.major}.{sys.version_info.minor}":
        return core_env.ensure()
    return core_env.ensure(core_env.BENCH_DIR / f".venv-core-{python.name}", python.executable)
