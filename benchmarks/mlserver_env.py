"""MLServer with its sklearn runtime, installed into its own venv (``benchmarks/.venv-mlserver``).

scikit-learn is pinned to the version Dockyard's venv has, so both load the same joblib files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sklearn

VENV = Path(__file__).resolve().parent / ".venv-mlserver"
MLSERVER_VERSION = "1.7.*"
INSTALL_TIMEOUT_S = 900.0


def requirements() -> list[str]:
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"scikit-learn=={sklearn.__version__}",
    ]


def ensure(venv: Path = VENV) -> Path:
    """The ``mlserver`` executable, creating the venv and installing into it when needed.

    Raises RuntimeError with pip's last lines when the install fails.
    """
    marker = venv / ".bench-requirements"
    wanted = "\n".join(requirements())
    mlserver = venv / "bin" / "mlserver"
    if mlserver.exists() and marker.exists() and marker.read_text() == wanted:
        return mlserver
    python = venv / "bin" / "python"
    steps = [
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", *requirements()],
    ]
    for step in steps:
        try:
            completed = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"{' '.join(step)} failed: {exc}") from exc
        if completed.returncode != 0:
            lines = [ln for ln in completed.stderr.splitlines() if "WARNING" not in ln]
            raise RuntimeError(f"{' '.join(step[:4])}… failed:\n" + "\n".join(lines[-15:]))
    marker.write_text(wanted)
    return mlserver


def version(venv: Path = VENV) -> str:
    completed = subprocess.run(
        [str(venv / "bin" / "mlserver"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.stdout.strip() or completed.stderr.strip()
