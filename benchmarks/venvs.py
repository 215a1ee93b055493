"""Side virtual environments the suite installs for itself (MLServer; a serving-only Dockyard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INSTALL_TIMEOUT_S = 900.0


def ensure(
    venv: Path,
    requirements: list[str],
    executable: str,
    depends_on: tuple[str, ...] = (),
    python: str | None = None,
) -> Path:
    """``venv/bin/<executable>``, creating the venv (with ``python``; by default the interpreter
    running this) and installing ``requirements`` when needed.

    A marker file remembers what was installed (``requirements``, ``depends_on``: what else
    decides the install, such as an editable project's own dependencies, and ``python`` when
    given), so a later run reuses the venv until any changes. Raises RuntimeError with pip's last
    lines when the install fails.
    """
    marker = venv / ".bench-requirements"
    chosen = (f"# python: {python}",) if python else ()
    wanted = "\n".join([*requirements, *(f"# {line}" for line in depends_on), *chosen])
    program = venv / "bin" / executable
    if program.exists() and marker.exists() and marker.read_text() == wanted:
        return program
    creator = python or str(getattr(sys, "_base_executable", sys.executable))
    installer = str(venv / "bin" / "python")
    steps: list[list[str]] = [
        [creator, "-m", "venv", "--clear", str(venv)],
        [installer, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [installer, "-m", "pip", "install", "--quiet", *requirements],
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
