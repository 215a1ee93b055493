"""Sampling profiles of a server under load with py-spy, summarised as the hottest functions.

py-spy is pip-installed into the running venv when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 250
INSTALL_TIMEOUT_S = 300.0
FINISH_SLACK_S = 60.0
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
PATH_MARKERS = ("site-packages/", "/src/", "/lib/python3")
PLUMBING = (
    "<frozen importlib",
    "typer/",
    "click/",
    "asyncio/runners.py",
    "asyncio/events.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "dockyard/cli/",
    "threading.py",
    "concurrent/futures/thread.py",
    "(dockyard)",
)
"""Frames under which everything runs (entry points, loops, import machinery): left out of the
inclusive ranking, where they would only crowd out the functions that do the work."""


def ensure_py_spy() -> str | None:
    """The py-spy executable beside this interpreter (installed with pip if missing), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found:
        return found
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return str(beside) if beside.exists() else None


def start(py_spy: str, pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` and its subprocesses for ``seconds``; wait on the returned process."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(RATE_HZ),
            "--format",
            "raw",
            "--subprocesses",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(recorder: subprocess.Popen[bytes], output: Path, seconds: float) -> dict[str, Any] | str:
    """Wait for a recorder from ``start``; its summary, or what went wrong."""
    try:
        _, stderr = recorder.communicate(timeout=seconds + FINISH_SLACK_S)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.communicate()
        return "py-spy did not finish"
    if recorder.returncode != 0 or not output.exists():
        return stderr.decode(errors="replace").strip()[-500:]
    return summarize(output)


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    for marker in PATH_MARKERS:
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['function']} ({file})"


def summarize(folded: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in a py-spy raw (folded) file.

    Self counts every frame; the inclusive ranking leaves out ``PLUMBING``.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for function in set(frames):
            if not any(marker in function for marker in PLUMBING):
                inclusive[function] += count
    return {
        "samples": total,
        "self": [(name, count / total) for name, count in own.most_common(top)] if total else [],
        "inclusive": (
            [(name, count / total) for name, count in inclusive.most_common(top)] if total else []
        ),
    }
