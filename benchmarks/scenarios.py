"""One scenario: a group of servers started side by side, loaded one at a time, then stopped.

Every server in a scenario is up for the whole scenario (idle ones cost nothing) so the runs can be
interleaved: for each connection count, each repeat visits every server in turn, and drift on a
noisy machine hits them all alike. A row reports the median of its repeats. Every request to a
server carries its spec's ``Authorization`` (Dockyard's API key), checks and warm-ups included.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import launch
import loadgen
import profiling
from launch import RunningServer, ServerSpec

SATURATED = 0.95
"""An open-loop rate is saturated when the server completes less than this share of it on time."""

PROFILED_CONNECTIONS = (1, 64)
ClosedLoop = Callable[[int, str, Path, int, float, str | None], dict[str, Any]]
"""(port, path, body file, connections, seconds, Authorization value) -> one closed-loop result."""


@dataclass(frozen=True)
class Plan:
    duration_s: float
    repeats: int
    warmup_s: float
    open_duration_s: float
    rates: tuple[float, ...]
    connections: tuple[int, ...] = (1, 8, 64)
    profile_s: float = 5.0


@dataclass(frozen=True)
class Entry:
    """A row of a scenario: a server and the body sent to it (servers may appear in several)."""

    label: str
    spec: ServerSpec
    body: Path
    connections: tuple[int, ...] | None = None
    is_open_loop: bool = False
    is_profiled: bool = False


@dataclass
class Outcome:
    closed: list[dict[str, Any]] = field(default_factory=list)
    open: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)


def _attempt(
    outcome: Outcome, what: str, action: Callable[[], dict[str, Any]]
) -> dict[str, Any] | None:
    """One load run; a failed one is recorded and the scenario goes on without it."""
    try:
        return action()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        outcome.failures.append(f"{what}: {exc}")
        print(f"  failed: {what}: {exc}", flush=True)
        return None


def _key(spec: ServerSpec) -> tuple[str, int]:
    return (spec.label, spec.workers)


def _row(scenario: str, entry: Entry, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(name: str) -> float:
        return float(statistics.median(run[name] for run in runs))

    return {
        "scenario": scenario,
        "server": entry.label,
        "workers": entry.spec.workers,
        "connections": runs[0]["connections"],
        "rps": median("rps"),
        "rps_min": min(run["rps"] for run in runs),
        "rps_max": max(run["rps"] for run in runs),
        "p50_ms": median("p50_ms") if any(run["ok"] for run in runs) else None,
        "p99_ms": median("p99_ms") if any(run["ok"] for run in runs) else None,
        "errors": sum(run["errors"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
        "runs": runs,
    }


def _ms(value: float | None) -> str:
    return "      –" if value is None else f"{value:>7.2f}"


def print_row(row: dict[str, Any]) -> None:
    load = f"c={row['connections']}" if "rate" not in row else f"rate={row['rate']:g}/s"
    print(
        f"  {row['scenario']:<6} {row['server']:<28} w={row['workers']} {load:<12} "
        f"{row['rps']:>8.0f} req/s  p50 {_ms(row['p50_ms'])} ms  p99 {_ms(row['p99_ms'])} ms  "
        f"errors {row['errors']}",
        flush=True,
    )


def _check(server: RunningServer, entry: Entry) -> str | None:
    """None when one inference request answers 200, else what went wrong."""
    try:
        status, body = launch.http_request(
            server.port,
            "POST",
            entry.spec.infer_path,
            entry.body.read_bytes(),
            authorization=entry.spec.authorization,
        )
    except OSError as exc:
        return f"{entry.label}: the first request failed: {exc}"
    if status != 200:
        return f"{entry.label}: the first request answered {status}: {body[:300]!r}"
    return None


def run(name: str, entries: list[Entry], plan: Plan, closed: ClosedLoop, logs: Path) -> Outcome:
    """Start the scenario's servers, run its closed loops, open loops and profiles, stop them."""
    outcome = Outcome()
    with contextlib.ExitStack() as stack:
        up: dict[tuple[str, int], RunningServer] = {}
        for entry in entries:
            key = _key(entry.spec)
            if key in up:
                continue
            try:
                up[key] = stack.enter_context(launch.running(entry.spec, logs))
            except RuntimeError as exc:
                outcome.failures.append(f"{name}: {entry.label} did not start: {exc}")
        ready = []
        for entry in entries:
            server = up.get(_key(entry.spec))
            problem = None if server is None else _check(server, entry)
            if server is None or problem:
                if problem:
                    outcome.failures.append(f"{name}: {problem}")
                continue
            if plan.warmup_s > 0:
                _attempt(
                    outcome,
                    f"{name}: {entry.label} warm-up",
                    lambda s=server, e=entry: closed(
                        s.port, e.spec.infer_path, e.body, 64, plan.warmup_s, e.spec.authorization
                    ),
                )
            ready.append((entry, server))
        _closed_loops(name, ready, plan, closed, outcome)
        for entry, server in ready:
            if entry.is_open_loop:
                _open_loops(name, entry, server, plan, outcome)
            if entry.is_profiled:
                _profile(name, entry, server, plan, closed, outcome)
    return outcome


def _closed_loops(
    name: str,
    ready: list[tuple[Entry, RunningServer]],
    plan: Plan,
    closed: ClosedLoop,
    outcome: Outcome,
) -> None:
    for connections in plan.connections:
        runs: dict[int, list[dict[str, Any]]] = {}
        for _ in range(plan.repeats):
            for index, (entry, server) in enumerate(ready):
                if entry.connections is not None and connections not in entry.connections:
                    continue
                result = _attempt(
                    outcome,
                    f"{name}: {entry.label} (w={entry.spec.workers}, c={connections})",
                    lambda s=server, e=entry, c=connections: closed(
                        s.port, e.spec.infer_path, e.body, c, plan.duration_s, e.spec.authorization
                    ),
                )
                if result is not None:
                    runs.setdefault(index, []).append(result)
        for index, (entry, _) in enumerate(ready):
            if index in runs:
                row = _row(name, entry, runs[index])
                outcome.closed.append(row)
                print_row(row)


def _open_loops(
    name: str, entry: Entry, server: RunningServer, plan: Plan, outcome: Outcome
) -> None:
    """Offer rising rates until the server no longer keeps up (saturation), one run each."""
    for rate in plan.rates:
        result = _attempt(
            outcome,
            f"{name}: {entry.label} (w={entry.spec.workers}, open loop at {rate:g}/s)",
            lambda r=rate: loadgen.measure(
                "open",
                server.port,
                entry.spec.infer_path,
                entry.body,
                duration=plan.open_duration_s,
                connections=64,
                rate=r,
                authorization=entry.spec.authorization,
            ),
        )
        if result is None:
            return
        row = {**_row(name, entry, [result]), "rate": rate, "unfinished": result["unfinished"]}
        row["lag_p99_ms"] = result.get("lag_p99_ms")
        row["is_saturated"] = result["unfinished"] > 0 or result["rps"] < SATURATED * rate
        outcome.open.append(row)
        print_row(row)
        if row["is_saturated"]:
            return


def _profile(
    name: str,
    entry: Entry,
    server: RunningServer,
    plan: Plan,
    closed: ClosedLoop,
    outcome: Outcome,
) -> None:
    """Sample the server with py-spy under a closed loop at 1 and at 64 connections."""
    py_spy = profiling.ensure_py_spy()
    if py_spy is None:
        outcome.failures.append(f"{name}: py-spy could not be installed; no profile")
        return
    for connections in PROFILED_CONNECTIONS:
        output = server.log.with_name(f"{server.log.stem}-c{connections}.folded")
        recorder = profiling.start(py_spy, server.pid, plan.profile_s, output)
        result = _attempt(
            outcome,
            f"{name}: {entry.label} under py-spy",
            lambda c=connections: closed(
                server.port,
                entry.spec.infer_path,
                entry.body,
                c,
                plan.profile_s + 1,
                entry.spec.authorization,
            ),
        )
        summary = profiling.finish(recorder, output, plan.profile_s)
        if result is None:
            return
        if isinstance(summary, str):
            outcome.failures.append(f"{name}: py-spy failed on {entry.label}: {summary}")
            return
        title = (
            f"{entry.label}, {name} model, {entry.spec.workers} worker(s), {connections} "
            f"connection(s), {result['rps']:.0f} req/s while sampled"
        )
        outcome.profiles.append({"title": title, **summary})
        print(f"  profiled {title}: {summary['samples']} samples", flush=True)
