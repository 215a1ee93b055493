"""Dockyard as a serving machine installs it: the core package only (``benchmarks/.venv-core``).

Start-up is measured here as well as in the dev venv: there, importing skops also imports pytest
and torch (skops walks every scikit-learn module, one of which imports torch when it is installed).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import venvs

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".venv-core"


def project_dependencies() -> tuple[str, ...]:
    """The core dependencies in ``pyproject.toml``: when they change, the venv is reinstalled (an
    editable install would otherwise keep running this checkout without a newly added one)."""
    with (BENCH_DIR.parent / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    return tuple(project.get("dependencies", ()))


def ensure(venv: Path = VENV, python: str | None = None) -> Path:
    """The ``dockyard`` executable of a core-only install of this checkout (on ``python``; by
    default the interpreter running this)."""
    return venvs.ensure(
        venv,
        ["-e", str(BENCH_DIR.parent)],
        "dockyard",
        depends_on=project_dependencies(),
        python=python,
    )
