"""Side virtual environments the suite installs for itself (MLServer; a serving-only Dockyard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INSTALL_TIMEOUT_S = 900.0


def ensure(
    venv: Path, requirements: list[str], executable: str, depends_on: tuple[str, ...] = ()
) -> Path:
    """``venv/bin/<executable>``, creating the venv and installing ``requirements`` when needed.

    A marker file remembers what was installed (``requirements`` and ``depends_on``: what else
    decides the install, such as an editable project's own dependencies), so a later run reuses
    the venv until either changes. Raises RuntimeError with pip's last lines when the install
    fails.
    """
    marker = venv / ".bench-requirements"
    wanted = "\n".join([*requirements, *(f"# {line}" for line in depends_on)])
    program = venv / "bin" / executable
    if program.exists() and marker.exists() and marker.read_text() == wanted:
        return program
    python = venv / "bin" / "python"
    steps = [
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
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
    return program
