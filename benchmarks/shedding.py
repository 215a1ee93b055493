"""Load shedding (issue 13): open loop at the saturating rate and at twice it, one worker.

The model is a Python function that sleeps 2 ms per row (``ROW_S``): its capacity (~480 rows/s)
is set by the model, whatever the batch, as for any model whose cost grows with its rows. The small
scikit-learn model is no use here: on this 2-core machine its worker saturates on the event loop's
own per-request work (~5,000 req/s), before its queue grows, and one load-generator process cannot
send twice that on schedule. Shedding bounds a model's queue; it shows where the model is the
bottleneck. At 2 ms a row, twice saturation (~1,000 req/s) keeps the event loop and the load
generator far from their own limits on the 2 cores they share. ``max_queue`` is sized to the
latency wanted (8 rows: at most 16 ms of waiting, then a batch of at most 16 ms). A bound is what
an admitted request may wait: with 16 rows (64 ms at worst) the admitted p99 at twice saturation
sat at 3 x the p99 at saturation (~22 ms) by construction, with 8 it sits near 1.5 x.

The saturating rate is found as in the other open-loop rows: rates rise (fractions of the
closed-loop capacity) until the server answers under 95 % of the offered rate with 200; the last
rate that held is saturation. Then twice that rate. Latencies are split by status: the admitted
requests (200) and the shed ones (503, ``Retry-After``; checked on every answer by
``tests/e2e/test_shedding.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import launch
import loadgen
import models
import numpy as np

ROW_S = 0.002
MAX_QUEUE = 8
CONNECTIONS = 128
"""Enough that a request never waits in the generator for a free connection (admitted requests
hold one for ~30 ms at 2 x saturation: ~15 busy)."""
FRACTIONS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2)
HELD = 0.95
SOURCE = f"""
import time


def score(x):
    time.sleep({ROW_S} * len(x))
    return {{"score": x.sum(axis=1)}}
"""
BODY = models.v2_body("input-0", "FP64", [1.0, 2.0, 3.0], None)


def _home(folder: Path) -> tuple[Path, str]:
    """A home with the model ``rowwise`` and a predictor key."""
    from dockyard.config import load_settings
    from dockyard.services.register import Registration, register
    from dockyard.services.workspace import Workspace

    code = folder / "code"
    code.mkdir(parents=True)
    (code / "scorer.py").write_text(SOURCE)
    home = folder / "home"
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    reference = np.abs(np.random.default_rng(0).normal(size=(20, 3)))
    try:
        register(
            workspace,
            code,
            Registration("rowwise", reference_data=reference, entrypoint="scorer:score"),
        )
    finally:
        workspace.store.engine.dispose()
    return home, models.create_key(home)


def _open(server: launch.RunningServer, body: Path, rate: float, seconds: float) -> dict[str, Any]:
    run = loadgen.measure(
        "open",
        server.port,
        server.spec.infer_path,
        body,
        duration=seconds,
        connections=CONNECTIONS,
        rate=rate,
        authorization=server.spec.authorization,
    )
    admitted = run["by_status"].get("200", {})
    shed = run["by_status"].get("503", {})
    others = {s: v["count"] for s, v in run["by_status"].items() if s not in {"200", "503"}}
    row = {
        "rate": rate,
        "ok_rps": run["rps"],
        "admitted": admitted.get("count", 0.0),
        "admitted_p50_ms": admitted.get("p50_ms"),
        "admitted_p99_ms": admitted.get("p99_ms"),
        "shed": shed.get("count", 0.0),
        "shed_p99_ms": shed.get("p99_ms"),
        "shed_max_ms": shed.get("max_ms"),
        "other_statuses": others,
        "unfinished": run["unfinished"],
        "lag_p99_ms": run["lag_p99_ms"],
    }
    print(
        f"  open {rate:>7.0f}/s: {run['rps']:>7.0f} ok/s, admitted p99 "
        f"{_ms(row['admitted_p99_ms'])}, shed {row['shed']:.0f} (p99 {_ms(row['shed_p99_ms'])}, "
        f"max {_ms(row['shed_max_ms'])})",
        flush=True,
    )
    return row


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def measure(logs: Path, seconds: float = 3.0) -> dict[str, Any]:
    """Capacity (closed loop), the saturating rate and twice it (open loop)."""
    with tempfile.TemporaryDirectory(prefix="dockyard-shedding-") as scratch:
        folder = Path(scratch)
        home, key = _home(folder)
        body = folder / "body.json"
        body.write_bytes(BODY)
        spec = launch.dockyard_spec(
            home,
            "rowwise:1",
            label="dockyard-shedding",
            model_options=(f"rowwise.max_queue={MAX_QUEUE}",),
            api_key=key,
        )
        with launch.running(spec, logs) as server:
            closed = loadgen.measure(
                "closed",
                server.port,
                spec.infer_path,
                body,
                duration=seconds,
                connections=MAX_QUEUE,
                authorization=spec.authorization,
            )
            capacity = closed["rps"]
            print(f"  closed loop, {MAX_QUEUE} connections: {capacity:.0f} req/s", flush=True)
            rates = []
            for fraction in FRACTIONS:
                row = _open(server, body, round(capacity * fraction), seconds)
                if row["ok_rps"] < HELD * row["rate"]:
                    break
                rates.append(row)
            if not rates:
                raise RuntimeError(f"the server held none of the rates {FRACTIONS} x {capacity}")
            saturation = rates[-1]
            double = _open(server, body, 2 * saturation["rate"], seconds)
    return {
        "model": f"Python function sleeping {ROW_S * 1000:g} ms per row, 1 worker",
        "max_queue": MAX_QUEUE,
        "connections": CONNECTIONS,
        "seconds": seconds,
        "capacity_rps": capacity,
        "rates": rates,
        "saturation": saturation,
        "double": double,
    }


def admitted_p99_ratio(results: dict[str, Any]) -> tuple[float, str] | None:
    """The acceptance's first half: p99 of the admitted requests at 2 x saturation over at it."""
    shedding = results.get("shedding")
    if not shedding:
        return None
    at, double = shedding["saturation"], shedding["double"]
    if not at["admitted_p99_ms"] or double["admitted_p99_ms"] is None:
        return None
    value = double["admitted_p99_ms"] / at["admitted_p99_ms"]
    text = (
        f"{double['admitted_p99_ms']:.1f} ms at {double['rate']:.0f}/s vs "
        f"{at['admitted_p99_ms']:.1f} ms at {at['rate']:.0f}/s (saturation): {value:.2f}x"
    )
    return value, text


def shed_max_ms(results: dict[str, Any]) -> tuple[float, str] | None:
    """The acceptance's second half: the slowest shed answer at 2 x saturation."""
    double = (results.get("shedding") or {}).get("double")
    if not double or double["shed_max_ms"] is None:
        return None
    text = (
        f"max {double['shed_max_ms']:.1f} ms, p99 {double['shed_p99_ms']:.1f} ms over "
        f"{double['shed']:.0f} shed requests at {double['rate']:.0f}/s"
    )
    return double["shed_max_ms"], text


def rows(results: dict[str, Any]) -> tuple[str, list[list[Any]]] | None:
    """RESULTS.md's section: a line on the setup, then a row per open-loop rate (``ROW_HEADER``)."""
    shedding = results.get("shedding")
    if not shedding:
        return None
    setup = (
        f"{shedding['model']}, `max_queue` {shedding['max_queue']}, {shedding['connections']} "
        f"connections, {shedding['seconds']:g} s a rate; closed-loop capacity "
        f"{shedding['capacity_rps']:.0f} req/s; saturation {shedding['saturation']['rate']:.0f}/s, "
        "the last row is twice it (benchmarks/shedding.py)."
    )
    table = [
        [
            row["rate"],
            row["ok_rps"],
            row["admitted_p50_ms"],
            row["admitted_p99_ms"],
            row["shed"],
            row["shed_p99_ms"],
            row["shed_max_ms"],
        ]
        for row in [*shedding["rates"], shedding["double"]]
    ]
    return setup, table


ROW_HEADER = [
    "offered/s",
    "ok/s",
    "admitted p50 ms",
    "admitted p99 ms",
    "shed",
    "shed p99 ms",
    "shed max ms",
]
