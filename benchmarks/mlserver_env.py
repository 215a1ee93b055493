"""MLServer with its sklearn runtime, installed into its own venv (``benchmarks/.venv-mlserver``).

scikit-learn is pinned to the version Dockyard's venv has, so both load the same joblib files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import sklearn
import venvs

VENV = Path(__file__).resolve().parent / ".venv-mlserver"
MLSERVER_VERSION = "1.7.*"


def requirements() -> list[str]:
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"scikit-learn=={sklearn.__version__}",
    ]


def ensure(venv: Path = VENV) -> Path:
    """The ``mlserver`` executable, installing MLServer into its venv when needed."""
    return venvs.ensure(venv, requirements(), "mlserver")


def version(venv: Path = VENV) -> str:
    completed = subprocess.run(
        [str(venv / "bin" / "mlserver"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.stdout.strip() or completed.stderr.strip()
