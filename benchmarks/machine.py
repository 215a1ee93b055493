"""What the results were measured on: CPU, cores, memory, kernel, versions and any GPU."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlserver_env

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "scikit-learn", "uvicorn", "fastapi", "orjson", "onnxruntime")


def describe() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": int(meminfo[meminfo.index("MemTotal:") + 1]) / 1e6,
        "kernel": f"{platform.system()} {platform.release()}",
    }


def _first_line(command: list[str], *, any_status: bool = False) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if (done.returncode == 0 or any_status) and lines else None


def versions(wrk_path: str | None, has_mlserver: bool) -> dict[str, str]:
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"
    changed = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
    found = {
        "dockyard": f"{version('dockyard')} ({commit}{'-dirty' if changed else ''})",
        "python": platform.python_version(),
    }
    found.update({package: version(package) for package in PACKAGES})
    if has_mlserver:
        found["mlserver"] = mlserver_env.version().split()[-1]
    if wrk_path is not None:
        line = _first_line([wrk_path, "--version"], any_status=True) or "wrk ?"  # exits 1
        found["wrk"] = line.split()[1]
    return found


def gpu_status() -> str:
    """'skipped: no GPU …' unless nvidia-smi lists one (the suite has no GPU scenario yet)."""
    listed = _first_line(["nvidia-smi", "-L"])
    if listed is None or "GPU" not in listed:
        return "skipped: no GPU (nvidia-smi finds none)"
    return f"skipped: a GPU is present ({listed}) but this suite has no GPU scenario yet"
