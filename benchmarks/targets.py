"""The targets of issues 3 and 8, the Ray backend's throughput (issue 14), the cost of auth (auth
+ rate limits against ``--no-auth``), of monitoring (issue 11: metrics, and metrics with every
request logged, against neither) and of personal-data rules (issue 12: every request logged
through them, against logged as it came) and of ``dockyard optimize`` (issue 15: each model served
from its optimized version against the original), checked against one run's results: measured value,
pass/fail, margin."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cli_timings
import grpc_bench
import shedding
import swap
from lineup import (
    AUTH_RATE_LIMITS,
    BARE,
    DEFAULTS_CONNECTIONS,
    DOCKYARD,
    DOCKYARD_ANONYMIZED,
    DOCKYARD_AUTH,
    DOCKYARD_DEFAULTS,
    DOCKYARD_ISOLATED,
    DOCKYARD_LOCAL,
    DOCKYARD_LOGGED,
    DOCKYARD_METRICS,
    DOCKYARD_NO_AUTH,
    DOCKYARD_RAY,
    DOCKYARD_THREAD_ENV,
    DOCKYARD_UNBATCHED,
    DOCKYARD_UNMONITORED,
    MLSERVER_BATCHED,
    RAY_SERVE,
    SMALL_YARDSTICK,
    optimize_label,
)

LATENCY_NOISE = 1.05
"""'No worse' latency comparisons allow 5 %: the run-to-run spread of a p50 on this machine."""
AUTH_THROUGHPUT = 0.95
"""Auth and rate limits may cost at most 5 % of the small model's throughput at 64 connections."""
METRICS_THROUGHPUT = 0.97
"""Metrics may cost at most 3 % of the small model's throughput at 64 connections (issue 11)."""
LOGGED_THROUGHPUT = 0.90
"""Metrics and logging every request may cost at most 10 % of it (issue 11)."""
RAY_VS_RAY_SERVE = 10.0
"""The Ray backend serves at least 10 x a plain Ray Serve deployment behind its proxy (issue 14)."""
RAY_VS_LOCAL = 0.5
"""The Ray backend serves at least half of what the local backend does, same CPUs (issue 14)."""
OPTIMIZED_HEAVY_P50 = 5.0
"""The heavy model's p50 at 1 connection, served from its optimized version, is at least 5 x lower
than from the original (issue 15)."""
OPTIMIZED_HEAVY_THROUGHPUT = 2.0
"""...and its throughput at 64 connections at least 2 x the original's (issue 15)."""
ANONYMIZED_THROUGHPUT = 0.95
"""Personal-data rules on every logged request may cost at most 5 % of logging it (issue 12)."""


@dataclass(frozen=True)
class Check:
    target: str
    ratio: Callable[[dict[str, Any]], tuple[float, str] | None]
    limit: float
    is_minimum: bool
    """True: the ratio must be at least ``limit``; False: at most."""


def closed(
    results: dict[str, Any], scenario: str, server: str, workers: int, connections: int
) -> dict[str, Any] | None:
    """The closed-loop row of one server at one connection count, if it was measured."""
    for row in results.get("closed", []):
        if (row["scenario"], row["server"], row["workers"], row["connections"]) == (
            scenario,
            server,
            workers,
            connections,
        ):
            return row
    return None


def _vs(
    scenario: str,
    server: str,
    other_scenario: str,
    other: str,
    workers: int,
    connections: int,
    metric: str,
    *,
    other_workers: int | None = None,
) -> Callable[[dict[str, Any]], tuple[float, str] | None]:
    unit = "req/s" if metric == "rps" else "ms"

    def ratio(results: dict[str, Any]) -> tuple[float, str] | None:
        mine = closed(results, scenario, server, workers, connections)
        theirs = closed(results, other_scenario, other, other_workers or workers, connections)
        if mine is None or theirs is None or not theirs[metric]:
            return None
        value = mine[metric] / theirs[metric]
        fmt = ".0f" if metric == "rps" else ".2f"
        text = (
            f"{mine[metric]:{fmt}} vs {theirs[metric]:{fmt}} {unit} ({other_scenario} {other}): "
            f"{value:.2f}x"
        )
        return value, text

    return ratio


def _optimized(
    model: str, connections: int, metric: str, *, defaults: bool = False
) -> Callable[[dict[str, Any]], tuple[float, str] | None]:
    """How much better the optimized version of ``model`` does than the original (side by side in
    the ``optimize`` scenario): original p50 / optimized p50, or optimized req/s / original's;
    ``defaults``: the rows served with one worker per core."""
    original = optimize_label(model, optimized=False, defaults=defaults)
    optimized = optimize_label(model, optimized=True, defaults=defaults)
    small_optimized = optimize_label("small", optimized=True)
    workers = len(os.sched_getaffinity(0)) if defaults else 1

    def ratio(results: dict[str, Any]) -> tuple[float, str] | None:
        before = closed(results, "optimize", original, workers, connections)
        after = closed(results, "optimize", optimized, workers, connections)
        if before is None or after is None or not before[metric] or not after[metric]:
            return None
        if metric == "rps":
            value = after["rps"] / before["rps"]
            text = f"{after['rps']:.0f} vs {before['rps']:.0f} req/s: {value:.2f}x"
            ceiling = closed(results, "optimize", small_optimized, workers, connections)
            if ceiling and model != "small" and not defaults:
                text += (
                    f" (the small model's optimized version, the server's ceiling: "
                    f"{ceiling['rps']:.0f} req/s = {ceiling['rps'] / before['rps']:.2f}x)"
                )
            return value, text
        value = before[metric] / after[metric]
        return value, f"p50 {after[metric]:.2f} vs {before[metric]:.2f} ms: {value:.2f}x lower"

    return ratio


def _memory(results: dict[str, Any]) -> tuple[float, str] | None:
    memory = results.get("memory") or {}
    one, two = memory.get("workers_1"), memory.get("workers_2")
    if not one or not two:
        return None
    value = two["pss_mb"] / one["pss_mb"]
    text = (
        f"PSS {two['pss_mb']:.0f} MB (2 workers) vs {one['pss_mb']:.0f} MB (1 worker), "
        f"{memory['weights_mb']:.0f} MB of weights: {value:.2f}x"
    )
    return value, text


def _startup(results: dict[str, Any]) -> tuple[float, str] | None:
    """Judged on the serving install (core package only); the dev venv's figure is reported too."""
    startup = results.get("startup_core") or {}
    if "median_s" not in startup:
        return None
    runs = ", ".join(f"{s:.2f}" for s in startup["runs_s"])
    dev = (results.get("startup") or {}).get("median_s")
    extra = f"; dev venv with every extra: {dev:.2f} s" if dev is not None else ""
    return (
        startup["median_s"],
        f"{startup['median_s']:.2f} s, core install (median of {runs}){extra}",
    )


def _cli(command: str) -> Callable[[dict[str, Any]], tuple[float, str] | None]:
    def seconds(results: dict[str, Any]) -> tuple[float, str] | None:
        for row in (results.get("cli") or {}).get("commands", []):
            if row["command"] == command:
                runs = ", ".join(f"{s:.2f}" for s in row["runs_s"])
                return row["median_s"], f"{row['median_s']:.2f} s (median of {runs})"
        return None

    return seconds


CHECKS = (
    Check(
        "Small, 64 conn, 1 worker: req/s >= 0.85 x bare ASGI",
        _vs("small", DOCKYARD, "small", BARE, 1, 64, "rps"),
        0.85,
        True,
    ),
    Check(
        "Small, 64 conn, 2 workers: req/s >= 0.85 x bare ASGI",
        _vs("small", DOCKYARD, "small", BARE, 2, 64, "rps"),
        0.85,
        True,
    ),
    Check(
        "Small, 64 conn, 1 worker: p99 <= 1.5 x bare ASGI",
        _vs("small", DOCKYARD, "small", BARE, 1, 64, "p99_ms"),
        1.5,
        False,
    ),
    Check(
        "Small, 64 conn, 2 workers: p99 <= 1.5 x bare ASGI",
        _vs("small", DOCKYARD, "small", BARE, 2, 64, "p99_ms"),
        1.5,
        False,
    ),
    Check(
        "Small, 1 conn: p50 <= 1.2 x bare ASGI",
        _vs("small", DOCKYARD, "small", BARE, 1, 1, "p50_ms"),
        1.2,
        False,
    ),
    Check(
        "Heavy, 64 conn: req/s >= 3 x MLServer with adaptive batching",
        _vs("heavy", DOCKYARD, "heavy", MLSERVER_BATCHED, 1, 64, "rps"),
        3.0,
        True,
    ),
    Check(
        "Heavy, 64 conn: req/s >= 0.8 x Dockyard's small-model req/s (heavy with isolate = true; "
        "the small model measured interleaved with it in the heavy scenario)",
        _vs("heavy", DOCKYARD_ISOLATED, "heavy", SMALL_YARDSTICK, 1, 64, "rps"),
        0.8,
        True,
    ),
    Check(
        f"Heavy, 1 conn: p50 with batching no worse than without (<= {LATENCY_NOISE}x)",
        _vs("heavy", DOCKYARD, "heavy", DOCKYARD_UNBATCHED, 1, 1, "p50_ms"),
        LATENCY_NOISE,
        False,
    ),
    *(
        Check(
            f"Heavy, {connections} conn, every default: req/s >= 0.9 x the same server with "
            "OMP_NUM_THREADS=1",
            _vs(
                "heavy-defaults",
                DOCKYARD_DEFAULTS,
                "heavy-defaults",
                DOCKYARD_THREAD_ENV,
                len(os.sched_getaffinity(0)),
                connections,
                "rps",
            ),
            0.9,
            True,
        )
        for connections in DEFAULTS_CONNECTIONS
    ),
    Check(
        f"Auth cost, small, 64 conn, 1 worker: req/s with auth + rate limits "
        f"({AUTH_RATE_LIMITS}) >= {AUTH_THROUGHPUT} x the same server with --no-auth",
        _vs("auth-cost", DOCKYARD_AUTH, "auth-cost", DOCKYARD_NO_AUTH, 1, 64, "rps"),
        AUTH_THROUGHPUT,
        True,
    ),
    Check(
        f"Auth cost, small, 1 conn, 1 worker: p50 with auth + rate limits <= {LATENCY_NOISE} x "
        "the same server with --no-auth",
        _vs("auth-cost", DOCKYARD_AUTH, "auth-cost", DOCKYARD_NO_AUTH, 1, 1, "p50_ms"),
        LATENCY_NOISE,
        False,
    ),
    Check(
        f"Monitoring cost, small, 64 conn, 1 worker: req/s with metrics on >= "
        f"{METRICS_THROUGHPUT} x the same server with metrics off",
        _vs(
            "monitoring-cost",
            DOCKYARD_METRICS,
            "monitoring-cost",
            DOCKYARD_UNMONITORED,
            1,
            64,
            "rps",
        ),
        METRICS_THROUGHPUT,
        True,
    ),
    Check(
        f"Monitoring cost, small, 64 conn, 1 worker: req/s with metrics on and every request "
        f"logged >= {LOGGED_THROUGHPUT} x the same server with metrics off",
        _vs(
            "monitoring-cost",
            DOCKYARD_LOGGED,
            "monitoring-cost",
            DOCKYARD_UNMONITORED,
            1,
            64,
            "rps",
        ),
        LOGGED_THROUGHPUT,
        True,
    ),
    Check(
        f"Privacy cost, small, 64 conn, 1 worker: req/s with every request logged through "
        f"personal-data rules >= {ANONYMIZED_THROUGHPUT} x the same server logging it as it came",
        _vs("privacy-cost", DOCKYARD_ANONYMIZED, "privacy-cost", DOCKYARD_LOGGED, 1, 64, "rps"),
        ANONYMIZED_THROUGHPUT,
        True,
    ),
    Check(
        f"Ray backend, small, 64 conn, one Ray instance on the machine's 2 cores: req/s >= "
        f"{RAY_VS_RAY_SERVE:g} x a plain Ray Serve deployment behind its HTTP proxy",
        _vs("ray", DOCKYARD_RAY, "ray", RAY_SERVE, 1, 64, "rps"),
        RAY_VS_RAY_SERVE,
        True,
    ),
    Check(
        f"Ray backend, small, 64 conn: req/s >= {RAY_VS_LOCAL:g} x the local backend (1 worker), "
        "same cores",
        _vs("ray", DOCKYARD_RAY, "ray", DOCKYARD_LOCAL, 1, 64, "rps"),
        RAY_VS_LOCAL,
        True,
    ),
    Check(
        "Shedding: at 2 x the saturating rate (open loop), p99 of the admitted requests "
        "<= 3 x its value at saturation",
        shedding.admitted_p99_ratio,
        3.0,
        False,
    ),
    Check(
        "Shedding: every shed request answered (503) within 10 ms",
        shedding.shed_max_ms,
        10.0,
        False,
    ),
    Check(
        "Alias move under load (64 conn, small, 2 workers): 0 failed requests",
        swap.failed,
        0.0,
        False,
    ),
    Check(
        "Alias move under load: req/s in the 10 s around the swap >= 0.8 x steady state",
        swap.window_ratio,
        0.8,
        True,
    ),
    Check(
        "Optimize: heavy model, 1 conn, p50 from its optimized version >= 5 x lower than original",
        _optimized("heavy", 1, "p50_ms"),
        OPTIMIZED_HEAVY_P50,
        True,
    ),
    Check(
        "Optimize: small model, 1 conn, p50 from its optimized version lower than original",
        _optimized("small", 1, "p50_ms"),
        1.0,
        True,
    ),
    Check(
        "Optimize: heavy model, 64 conn, req/s from its optimized version >= 2 x original",
        _optimized("heavy", 64, "rps"),
        OPTIMIZED_HEAVY_THROUGHPUT,
        True,
    ),
    Check(
        "Optimize: heavy model, 64 conn, one worker per core (defaults): req/s from its "
        "optimized version >= 2 x original",
        _optimized("heavy", 64, "rps", defaults=True),
        OPTIMIZED_HEAVY_THROUGHPUT,
        True,
    ),
    Check(
        "gRPC, small, 64 concurrent streams, 1 worker: req/s >= REST's at 64 connections "
        "(same server, side by side)",
        grpc_bench.throughput_ratio,
        1.0,
        True,
    ),
    Check(
        "gRPC, 1,000 x 30 FP32 request, raw contents: p50 >= 2 x faster than REST JSON",
        grpc_bench.large_request_ratio,
        2.0,
        True,
    ),
    Check("Memory: 2 workers <= 1.3 x 1 worker (PSS, >= 200 MB model)", _memory, 1.3, False),
    Check("Startup to /v2/health/ready, small model (core install): <= 3 s", _startup, 3.0, False),
    *(
        Check(f"`{command}`: <= {limit:g} s (dev venv)", _cli(command), limit, False)
        for command, limit in cli_timings.TARGETS_S.items()
    ),
)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value, whether it passed and by how much it missed or held."""
    rows = []
    for check in CHECKS:
        measured = check.ratio(results)
        if measured is None:
            rows.append({"target": check.target, "measured": "not measured", "passed": None})
            continue
        value, text = measured
        passed = value >= check.limit if check.is_minimum else value <= check.limit
        missed = "short" if check.is_minimum else "over"
        if check.limit:
            share = abs(value / check.limit - 1) * 100
            margin = f"{share:.0f} % {'headroom' if passed else missed}"
        else:  # a count that must stay at 0
            margin = "0 allowed" if passed else f"{value:g} {missed}"
        rows.append(
            {
                "target": check.target,
                "measured": text,
                "value": value,
                "limit": check.limit,
                "passed": passed,
                "margin": margin,
            }
        )
    return rows
