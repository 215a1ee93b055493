"""Seconds from spawning ``dockyard serve`` to the first 200 from ``/v2/health/ready``.

The probe carries no API key, as an orchestrator's does not: the health probes are the routes
Dockyard serves without one.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import launch
import profiling

REF = "small:1"
ATTACH_DELAY_S = 0.15


def measure(
    home: Path,
    logs: Path,
    runs: int,
    executable: Path | None = None,
) -> dict[str, Any]:
    """Start and stop the server ``runs`` times after an untimed start; the median and each run.

    ``executable``: a ``dockyard`` from another venv (default: this one's).
    """
    spec = launch.dockyard_spec(home, REF, workers=1, executable=executable)
    seconds = []
    for run in range(runs + 1):
        server = launch.start(spec, logs)
        try:
            ready_s = launch.wait_ready(server)
        finally:
            launch.stop(server)
        if run > 0:  # the first start only warms the page cache
            seconds.append(ready_s)
    print(f"  startup to ready: {', '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
    return {
        "command": f"{executable or 'dockyard'} serve {REF} --workers 1",
        "runs_s": seconds,
        "median_s": statistics.median(seconds),
    }


def profile(home: Path, logs: Path, seconds: float) -> dict[str, Any] | str:
    """A py-spy profile of one start-up (from ``ATTACH_DELAY_S`` after spawning), or the error."""
    py_spy = profiling.ensure_py_spy()
    if py_spy is None:
        return "py-spy could not be installed"
    spec = launch.dockyard_spec(home, REF, workers=1)
    server = launch.start(spec, logs)
    try:
        time.sleep(ATTACH_DELAY_S)  # py-spy needs the interpreter mapped before it attaches
        output = server.log.with_suffix(".folded")
        recorder = profiling.start(py_spy, server.pid, seconds, output)
        ready_s = launch.wait_ready(server)
        summary = profiling.finish(recorder, output, seconds)
    finally:
        launch.stop(server)
    if isinstance(summary, str):
        return summary
    title = f"dockyard serve {REF} start-up ({ready_s:.2f} s to ready while sampled)"
    return {"title": title, **summary}
