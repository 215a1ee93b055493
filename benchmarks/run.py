"""``make bench``: Dockyard against its references, side by side on this machine (issue 3).

Trains the models, installs what the comparison needs (wrk with apt-get, MLServer into
``benchmarks/.venv-mlserver``, py-spy with pip), runs every scenario, checks the targets and writes
``benchmarks/RESULTS.md`` and ``benchmarks/results.json``. A section that fails is recorded in the
results and the run goes on; every server is stopped on the way out, whatever happened.

``--quick`` is a smoke run (1 s per point, one repeat) written to ``benchmarks/.quick/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cli_timings
import core_env
import grpc_bench
import launch
import lineup
import loadgen
import machine
import memory
import mlserver_env
import models
import optimized
import pythons
import reference
import report
import scenarios
import shedding
import startup
import swap
import targets
import wrk
from scenarios import Entry, Plan
from threadpoolctl import threadpool_limits

BENCH_DIR = Path(__file__).resolve().parent
FULL = Plan(
    duration_s=3,
    repeats=3,
    warmup_s=2,
    open_duration_s=4,
    rates=(250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000),
    profile_s=6,
)
QUICK = Plan(
    duration_s=1,
    repeats=1,
    warmup_s=1,
    open_duration_s=1,
    rates=(500, 2000, 4000, 8000),
    profile_s=2,
)
REFERENCE_S = {True: 0.5, False: 2.0}
AUTH_COST_REPEAT_FACTOR = 3
STARTUP_RUNS = {True: 1, False: 3}
CLI_RUNS = {True: 1, False: cli_timings.RUNS}
METHOD = [
    "Server and load generator share the machine's cores, unpinned, as in the issue's figures.",
    "Dockyard runs with nothing set in the environment (it limits OpenMP/BLAS threads itself);",
    "the reference servers run with "
    f"{' '.join(f'{k}={v}' for k, v in lineup.THREAD_ENV.items())} (their default spins one",
    "OpenMP thread per core). Scenario 'heavy-defaults' serves the heavy model with every",
    "default (one worker per core) and again with that variable set.",
    "Closed loop: wrk, 1 thread, N keep-alive connections; each row is the median of the",
    "repeats, interleaved across the scenario's servers, all of which stay up for the scenario.",
    "Open loop: benchmarks/loadgen.py, 64 connections, requests on a fixed schedule, latency",
    "from the scheduled send time; rates rise until the server completes under 95 % of the",
    "offered rate (saturation).",
    "Requests: one row each, V2 JSON, input-0 [1, 30] FP64, asking for predict_proba (what the",
    "bare callable computes); the 'all outputs' rows ask for nothing, so Dockyard computes",
    "predict and predict_proba. MLServer 1.7 runs its sklearn runtime with parallel_workers 0",
    "(its parallel inference pool fails to start beside current uvloop); its adaptive batching",
    f"is max_batch_size 64, max_batch_time {models.MLSERVER_BATCH_TIME_S * 1000:g} ms.",
    "Dockyard runs with its defaults: adaptive batching of up to 64 rows, no timer wait; the",
    "'dockyard (isolate)' rows add --model-option heavy.isolate=true (the model predicts in a",
    "child process of the worker, beside the event loop instead of sharing its GIL).",
    "Auth is on in every Dockyard row, as by default: every request to Dockyard (check, warm-up,",
    "closed and open loop) carries 'Authorization: Bearer KEY', one predictor key created in the",
    "bench home. Scenario 'auth-cost' serves the small model (1 worker) twice, side by side:",
    f"with DOCKYARD_RATE_LIMITS={lineup.AUTH_RATE_LIMITS} (never reached, but the key's bucket is",
    "checked on every request) and with --no-auth, with 3 x the repeats of the other scenarios",
    "(the targets resolve 5 %; runs of one server spread 10-15 % on this machine).",
    "Scenario 'monitoring-cost' serves the small model (1 worker) three times, side by side:",
    "metrics off, metrics on, and metrics on with every request written to the prediction log,",
    "with the same 3 x repeats as 'auth-cost'. Scenario 'privacy-cost' serves it twice with",
    "every request logged: as it came, and through personal-data rules (x0 hashed, x1",
    "generalized), with the same repeats.",
    "Section 'REST and gRPC': one server answering both (benchmarks/grpc_bench.py): the small",
    "model at 64 connections (wrk) against 64 concurrent streams on one HTTP/2 connection",
    "(h2load posting the gRPC frame), and with the Python clients loadgen.py and",
    "grpc_loadgen.py; a 1,000 x 30 FP32 request, one at a time, REST JSON against gRPC raw.",
    "Scenario 'ray' serves the small model on the Ray backend, on a plain Ray Serve deployment",
    "behind Ray's HTTP proxy and on the local backend, one at a time, each with a Ray instance",
    "of its own on 127.0.0.1 (the local backend none); the Ray backend's server is profiled.",
    "Scenario 'optimize' serves each model from its original version and from the version",
    "`dockyard optimize` registered from it (auto), side by side, 1 worker each.",
    "Scenario 'pythons' serves the small model from a core install on every supported Python",
    "found here (noxfile.py's PYTHONS; pyenv's, selected as make test-pythons does), side by side.",
]


def _section(results: dict[str, Any], name: str, action: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded (with its traceback printed) and the run goes on."""
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    try:
        value = action()
    except Exception as exc:
        traceback.print_exc()
        results["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
        return None
    print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    return value


def _closed_driver(wrk_path: str | None, script: Path) -> scenarios.ClosedLoop:
    if wrk_path is None:
        return lambda port, path, body, connections, seconds, authorization: loadgen.measure(
            "closed",
            port,
            path,
            body,
            duration=seconds,
            connections=connections,
            authorization=authorization,
        )
    return lambda port, path, body, connections, seconds, authorization: wrk.closed_loop(
        wrk_path,
        script,
        f"http://{launch.HOST}:{port}{path}",
        body,
        duration=seconds,
        connections=connections,
        authorization=authorization,
    )


def _write_bodies(built: models.ModelSet, folder: Path) -> lineup.Bodies:
    paths = {}
    for name in ("tabular", "tabular_all_outputs", "onnx"):
        path = folder / f"{name}.json"
        path.write_bytes(getattr(built.bodies, name))
        paths[name] = path
    return lineup.Bodies(**paths)


def _scenario(
    results: dict[str, Any],
    name: str,
    entries: list[Entry],
    plan: Plan,
    closed: scenarios.ClosedLoop,
    logs: Path,
) -> None:
    outcome = scenarios.run(name, entries, plan, closed, logs)
    results["closed"] += outcome.closed
    results["open"] += outcome.open
    results["profiles"] += outcome.profiles
    results["failures"] += outcome.failures


def _optimize(
    results: dict[str, Any],
    built: models.ModelSet,
    bodies: lineup.Bodies,
    plan: Plan,
    closed: scenarios.ClosedLoop,
    logs: Path,
    seconds: float,
) -> None:
    """Issue 15: both models optimized in the bench home, raw in-process rows of each runtime,
    and the original and optimized versions served side by side."""
    done = _section(results, "optimize (convert and prove)", lambda: optimized.register(built))
    if done is None:
        return
    results["optimize"] = done.records
    results["optimize_raw"] = (
        _section(
            results,
            "optimize: raw in-process predict",
            lambda: optimized.measure_raw(built, done, seconds),
        )
        or []
    )
    for row in results["optimize_raw"]:
        print(f"  {row['model']:<44} batch {row['batch']:>3}: {row['ms_per_call']:>8.3f} ms")
    entries = lineup.optimize(built, bodies, done.refs)
    _section(
        results, "optimize", lambda: _scenario(results, "optimize", entries, plan, closed, logs)
    )


def _pythons(
    results: dict[str, Any],
    built: models.ModelSet,
    bodies: lineup.Bodies,
    plan: Plan,
    closed: scenarios.ClosedLoop,
    logs: Path,
) -> None:
    """Issue 17: the small model served from every supported interpreter found here."""
    executables = _section(
        results,
        "pythons (core installs)",
        lambda: {found.version: pythons.dockyard(found) for found in pythons.installed()},
    )
    if not executables:
        return
    entries = lineup.pythons(built, bodies, executables)
    _section(results, "pythons", lambda: _scenario(results, "pythons", entries, plan, closed, logs))


def bench(results: dict[str, Any], work: Path, quick: bool) -> None:
    plan = QUICK if quick else FULL
    logs = work / "logs"
    wrk_path = _section(results, "wrk", wrk.ensure_wrk)
    if wrk_path is None:
        results["failures"].append("wrk: not installed; closed loops use benchmarks/loadgen.py")
    closed = _closed_driver(wrk_path, wrk.write_script(work))
    mls = _section(results, "MLServer (own venv)", mlserver_env.ensure)
    results["versions"] = machine.versions(wrk_path, mls is not None)
    built = _section(results, "models", lambda: models.build(work / "models"))
    if built is None:
        return
    bodies = _write_bodies(built, work)
    results["reference"] = (
        _section(
            results,
            "raw in-process predict",
            lambda: reference.measure(
                built.small, built.heavy, built.onnx_bytes, built.rows, REFERENCE_S[quick]
            ),
        )
        or []
    )
    for row in results["reference"]:
        print(f"  {row['model']:<22} batch {row['batch']:>3}: {row['rows_per_s']:>10.0f} rows/s")
    lineups = {
        "small": lineup.small(built, bodies, mls),
        "heavy": lineup.heavy(built, bodies, mls),
        "onnx": lineup.onnx(built, bodies),
    }
    # The auth targets resolve 5 %, finer than one 3-s run on this shared machine (runs of the
    # same server spread by 10-15 %): more interleaved repeats, and the median of each.
    auth_plan = dataclasses.replace(plan, repeats=plan.repeats * AUTH_COST_REPEAT_FACTOR)
    for name, entries in lineups.items():
        _section(
            results, name, lambda n=name, e=entries: _scenario(results, n, e, plan, closed, logs)
        )
    _optimize(results, built, bodies, plan, closed, logs, REFERENCE_S[quick])
    _pythons(results, built, bodies, plan, closed, logs)
    _section(
        results,
        "auth-cost",
        lambda: _scenario(
            results, "auth-cost", lineup.auth_cost(built, bodies), auth_plan, closed, logs
        ),
    )
    _section(
        results,
        "monitoring-cost",
        lambda: _scenario(
            results,
            "monitoring-cost",
            lineup.monitoring_cost(built, bodies),
            auth_plan,
            closed,
            logs,
        ),
    )
    _section(
        results,
        "privacy-cost",
        lambda: _scenario(
            results, "privacy-cost", lineup.privacy_cost(built, bodies), auth_plan, closed, logs
        ),
    )
    _section(
        results,
        "ray",
        lambda: _scenario(results, "ray", lineup.ray_backend(built, bodies), plan, closed, logs),
    )
    _section(
        results,
        "heavy-defaults",
        lambda: _scenario(
            results, "heavy-defaults", lineup.heavy_defaults(built, bodies), plan, closed, logs
        ),
    )
    results["grpc"] = _section(
        results, "REST and gRPC", lambda: grpc_bench.measure(built, logs, plan, closed, work)
    )
    results["shedding"] = _section(
        results, "shedding", lambda: shedding.measure(logs, plan.open_duration_s)
    )
    results["swap"] = _section(
        results, "alias move under load", lambda: swap.measure(built, bodies.tabular, logs)
    )
    results["startup"] = _section(
        results,
        "startup",
        lambda: startup.measure(built.home, logs, STARTUP_RUNS[quick]),
    )
    results["startup_core"] = _section(
        results,
        "startup (core install)",
        lambda: startup.measure(built.home, logs, STARTUP_RUNS[quick], core_env.ensure()),
    )
    if results["startup"]:
        seconds = math.ceil(max(results["startup"]["runs_s"])) + 1
        profile = _section(
            results,
            "startup profile",
            lambda: startup.profile(built.home, logs, seconds),
        )
        if isinstance(profile, str):
            results["failures"].append(f"startup profile: {profile}")
        elif profile:
            results["profiles"].append(profile)
    results["memory"] = _section(
        results, "memory", lambda: memory.compare_workers(built.home, logs, built.api_key)
    )
    results["cli"] = _section(results, "command line", lambda: cli_timings.measure(CLI_RUNS[quick]))
    results["gpu"] = {"status": machine.gpu_status()}
    print(f"  GPU: {results['gpu']['status']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", type=Path, help="where RESULTS.md and results.json go")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, models)")
    args = parser.parse_args()
    output = args.output or (BENCH_DIR / ".quick" if args.quick else BENCH_DIR)
    for name in lineup.THREAD_ENV:
        os.environ.pop(name, None)  # the reference servers get it explicitly; Dockyard never
    plan = QUICK if args.quick else FULL
    method = list(METHOD)
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        method.append(
            "PYTHONDONTWRITEBYTECODE was set in the calling environment; it is removed for the "
            "servers, which run as installed, with their bytecode cache (the untimed first start "
            "writes it)."
        )
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "benchmarks/run.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.describe(),
        "settings": {"quick": args.quick, "plan": plan.__dict__, "env": lineup.THREAD_ENV},
        "method": method,
        "versions": {},
        "closed": [],
        "open": [],
        "profiles": [],
        "failures": [],
    }
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    try:
        with threadpool_limits(limits=1):  # this process trains and measures; it must not spin
            bench(results, work, args.quick)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - started
    results["targets"] = targets.evaluate(results)
    markdown, raw = report.write(results, output)
    print("\n== targets")
    for row in results["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[row["passed"]]
        print(f"  {verdict:<4} {row['target']}: {row['measured']}")
    print(f"\nwrote {markdown} and {raw} in {results['elapsed_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
