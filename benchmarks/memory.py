"""Memory of ``dockyard serve`` with 1 and 2 workers: RSS and PSS from ``/proc/PID/smaps_rollup``.

RSS counts a page shared by forked workers once per process; PSS splits it between them, so the
PSS sum is what a ``--workers`` setting really costs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import launch
import models

MAX_PROCESSES = 256
WARMUP_REQUESTS = 20
WORKERS_TIMEOUT_S = 60.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (of every thread of it)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    tree = [pid]
    index = 0
    while index < len(tree) and len(tree) < MAX_PROCESSES:
        tree.extend(children(tree[index]))
        index += 1
    return tree


def rollup(pid: int) -> dict[str, int]:
    """The smaps_rollup fields of one process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def measure(pid: int) -> dict[str, Any]:
    """RSS and PSS, in MB, summed over ``pid``'s process tree, with each process's own figures."""
    processes = []
    for member in process_tree(pid):
        try:
            fields = rollup(member)
        except OSError:
            continue
        processes.append(
            {"pid": member, "rss_mb": fields["Rss"] / 1e6, "pss_mb": fields["Pss"] / 1e6}
        )
    return {
        "processes": len(processes),
        "rss_mb": sum(p["rss_mb"] for p in processes),
        "pss_mb": sum(p["pss_mb"] for p in processes),
        "per_process": processes,
    }


def _wait_for_processes(pid: int, count: int) -> None:
    deadline = time.monotonic() + WORKERS_TIMEOUT_S
    while len(process_tree(pid)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} processes did not start in {WORKERS_TIMEOUT_S:g} s")
        time.sleep(0.1)


def compare_workers(home: Path, logs: Path, api_key: str) -> dict[str, Any]:
    """Register ``big`` and measure ``dockyard serve big:1`` with 1 and 2 workers after warm-up
    requests (carrying ``api_key``, a predictor key of ``home``)."""
    weights_mb = models.register_big(home)
    body = models.v2_body("input-0", "FP64", [0.5] * models.FEATURES, ["predict_proba"])
    result: dict[str, Any] = {
        "weights_mb": weights_mb,
        "description": (
            f"KNeighborsClassifier(algorithm='brute') on {models.BIG_ROWS} x "
            f"{models.FEATURES} float64"
        ),
        "warmup_requests": WARMUP_REQUESTS,
    }
    for workers in (1, 2):
        spec = launch.dockyard_spec(home, "big:1", workers=workers, api_key=api_key)
        with launch.running(spec, logs) as server:
            _wait_for_processes(server.pid, 1 if workers == 1 else 1 + workers)
            for _ in range(WARMUP_REQUESTS):
                status, answer = launch.http_request(
                    server.port, "POST", spec.infer_path, body, authorization=spec.authorization
                )
                if status != 200:
                    raise RuntimeError(f"big model answered {status}: {answer[:200]!r}")
            measured = measure(server.pid)
        result[f"workers_{workers}"] = measured
        print(
            f"  memory --workers {workers}: RSS {measured['rss_mb']:.0f} MB, "
            f"PSS {measured['pss_mb']:.0f} MB ({measured['processes']} processes)",
            flush=True,
        )
    return result
