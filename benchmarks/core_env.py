"""Dockyard as a serving machine installs it: the core package only (``benchmarks/.venv-core``).

Start-up is measured here as well as in the dev venv: there, importing skops also imports pytest
and torch (skops walks every scikit-learn module, one of which imports torch when it is installed).
"""

from __future__ import annotations

from pathlib import Path

import venvs

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".venv-core"


def ensure(venv: Path = VENV) -> Path:
    """The ``dockyard`` executable of a core-only install of this checkout."""
    return venvs.ensure(venv, ["-e", str(BENCH_DIR.parent)], "dockyard")
