"""Alias move under load (issue 13): a running server follows its alias to a new version.

``dockyard serve small@staging --workers 2`` on the bench home (every other default: auth on, the
registry followed every ``follow_interval_s``), under a closed loop of 64 keep-alive connections
for ``SECONDS`` (benchmarks/loadgen.py, which reads each answer's ``model_version`` and counts the
requests ending in each ``BIN_S`` by status and version). The small model's second version (the
same data, retrained with another regularisation) is registered beforehand; ``staging`` (not a
protected alias) starts on the first and is moved to the second ``MOVE_AT_S`` into the run, from
this process, as the registry's local user (``dockyard models alias`` does the same).

Measured: steady state over ``STEADY_S`` (before the move); the swap, from the move to the last
answer of the old version; throughput over the ``WINDOW_S`` window centred on the swap (the swap
itself when it is longer); failed requests over the whole run (a status other than 200, a
transport error, or no answer by the end).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import launch
import loadgen
import models

ALIAS = "staging"
WORKERS = 2
CONNECTIONS = 64
SECONDS = 30.0
MOVE_AT_S = 12.0
"""When the alias moves, counted from the load generator's start (measured, not assumed)."""
STEADY_S = (1.0, 11.0)
"""The steady-state interval, from the load generator's start (the first second connects)."""
WINDOW_S = 10.0
WARMUP_S = 2.0
BIN_S = 0.1
ROW_HEADER = ["s from the move", "old version req/s", "new version req/s", "failed"]


def _register_second(home: Path) -> tuple[int, int]:
    """``small``'s second version (retrained with C=0.1) beside version 1, ``staging`` on 1;
    returns (old, new) version numbers."""
    from sklearn.linear_model import LogisticRegression

    import dockyard

    x, y = models.training_data()
    retrained = LogisticRegression(C=0.1, max_iter=1000).fit(x, y)
    new = dockyard.register_model(
        retrained, "small", reference_data=x[: models.REFERENCE_ROWS], home=home
    )
    _move(home, 1)
    return 1, new.version


def _move(home: Path, version: int) -> None:
    """Point ``small@staging`` at ``version``, as another process sharing the registry would."""
    from dockyard.config import load_settings
    from dockyard.security.principals import local_user
    from dockyard.services.changes import set_alias
    from dockyard.services.workspace import Workspace

    workspace = Workspace.open(load_settings({"home": home}, env={}))
    try:
        set_alias(workspace, local_user(), "small", ALIAS, version)
    finally:
        workspace.store.engine.dispose()


def measure(built: models.ModelSet, body: Path, logs: Path) -> dict[str, Any]:
    """Serve ``small@staging`` with 2 workers, load it, move the alias mid-run; the figures."""
    old, new = _register_second(built.home)
    spec = launch.dockyard_spec(
        built.home,
        f"small@{ALIAS}",
        workers=WORKERS,
        label="dockyard-swap",
        api_key=built.api_key,
    )
    with launch.running(spec, logs) as server:

        def load(seconds: float, timeline_bin_s: float = 0.0) -> dict[str, Any]:
            return loadgen.measure(
                "closed",
                server.port,
                spec.infer_path,
                body,
                duration=seconds,
                connections=CONNECTIONS,
                authorization=spec.authorization,
                timeline_bin_s=timeline_bin_s,
            )

        load(WARMUP_S)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = load(SECONDS, BIN_S)
            except Exception as exc:  # reported by the main thread
                outcome["error"] = exc

        loader = threading.Thread(target=run, name="swap-load")
        launched = time.monotonic()
        loader.start()
        # The generator's clock starts after its interpreter does (~0.5 s): move a little late
        # rather than early; the actual offset is computed from its timeline below.
        time.sleep(MOVE_AT_S + 0.5)
        moved_at = time.monotonic()
        _move(built.home, new)
        loader.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    figures = analyse(result, moved_at, old, new)
    figures.update(
        {
            "model": f"small (logistic regression), versions {old} -> {new}",
            "alias": ALIAS,
            "workers": WORKERS,
            "connections": CONNECTIONS,
            "seconds": SECONDS,
            "generator_started_after_s": result["timeline"]["start"] - launched,
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "max_ms": result["max_ms"],
        }
    )
    print(
        f"  steady {figures['steady_rps']:.0f} req/s; window {figures['window_rps']:.0f} req/s "
        f"({figures['window_ratio']:.2f}x); every answer from v{new} "
        f"{figures['swap_s']:.1f} s after the move; failed {figures['failed']}",
        flush=True,
    )
    return figures


def analyse(result: dict[str, Any], moved_at: float, old: int, new: int) -> dict[str, Any]:
    """Steady state, the swap and the window around it, from the run's timeline."""
    timeline = result["timeline"]
    start, bin_s = timeline["start"], timeline["bin_s"]
    series = {key: list(counts) for key, counts in timeline["series"].items()}
    bins = max(len(counts) for counts in series.values())
    for counts in series.values():
        counts.extend([0] * (bins - len(counts)))
    old_ok = series.get(f"200 {old}", [0] * bins)
    new_ok = series.get(f"200 {new}", [0] * bins)
    ok = [sum(c[i] for k, c in series.items() if k.startswith("200 ")) for i in range(bins)]
    failed_bins = [
        sum(c[i] for k, c in series.items() if not k.startswith("200 ")) for i in range(bins)
    ]
    move = (moved_at - start) / bin_s
    if move < STEADY_S[1] / bin_s:
        raise RuntimeError(
            f"the alias moved {move * bin_s:.1f} s into the run, before the steady "
            f"state ({STEADY_S[1]:g} s) was over"
        )
    if not any(new_ok):
        counted = {key: sum(counts) for key, counts in series.items()}
        raise RuntimeError(
            f"no answer came from version {new} in {SECONDS:g} s (by status and version: {counted})"
        )
    last_old = max((i for i, n in enumerate(old_ok) if n), default=0) + 1
    first_new = min(i for i, n in enumerate(new_ok) if n)
    done = max(last_old, move)
    # The window: the swap, padded on both sides to WINDOW_S when it is shorter.
    half = max(WINDOW_S / bin_s, done - move) / 2
    centre = (move + done) / 2
    lo, hi = round(centre - half), round(centre + half)
    if hi > int(SECONDS / bin_s):
        raise RuntimeError(f"the swap window ends past the run ({hi * bin_s:.1f} s)")

    def rate(first: int, last: int) -> float:
        return sum(ok[first:last]) / ((last - first) * bin_s)

    per_s = round(1 / bin_s)
    steady = rate(round(STEADY_S[0] / bin_s), round(STEADY_S[1] / bin_s))
    window = rate(lo, hi)
    # After the swap: up to the last 10 s, a second clear of it, the run's last second left out.
    end = round(SECONDS / bin_s) - per_s
    after_lo = max(math.ceil(done) + per_s, end - 10 * per_s)
    seconds = range(int(move) - 3 * per_s, min(hi + 2 * per_s, bins) - per_s + 1, per_s)
    return {
        "old_version": old,
        "new_version": new,
        "moved_after_s": move * bin_s,
        "steady_rps": steady,
        "window_rps": window,
        "window_ratio": window / steady if steady else 0.0,
        "window_s": ((lo - move) * bin_s, (hi - move) * bin_s),
        "lowest_second_rps": min(rate(i, i + per_s) for i in range(lo, hi - per_s + 1, per_s)),
        "first_new_after_s": (first_new - move) * bin_s,
        "swap_s": (done - move) * bin_s,
        "after_rps": rate(after_lo, end) if end - after_lo >= per_s else None,
        "requests": result["requests"],
        "failed": result["errors"] + result["unfinished"],
        "failed_by_kind": {
            k: sum(c) for k, c in series.items() if not k.startswith("200 ") and sum(c)
        },
        "unfinished": result["unfinished"],
        "other_versions": {
            k: sum(c)
            for k, c in series.items()
            if k.startswith("200 ") and k not in {f"200 {old}", f"200 {new}"}
        },
        "per_second": [
            [
                round((i - move) * bin_s, 1),
                sum(old_ok[i : i + per_s]),
                sum(new_ok[i : i + per_s]),
                sum(failed_bins[i : i + per_s]),
            ]
            for i in seconds
            if i >= 0
        ],
    }


def failed(results: dict[str, Any]) -> tuple[float, str] | None:
    """The acceptance's first half: failed requests over the whole run."""
    swap = results.get("swap")
    if not swap:
        return None
    kinds = ", ".join(
        f"{'transport error' if k == '0' else 'status ' + k}: {n}"
        for k, n in swap["failed_by_kind"].items()
    )
    text = f"{swap['failed']} of {swap['requests']} requests" + (f" ({kinds})" if kinds else "")
    return float(swap["failed"]), text


def window_ratio(results: dict[str, Any]) -> tuple[float, str] | None:
    """The acceptance's second half: req/s in the window around the swap over steady state."""
    swap = results.get("swap")
    if not swap:
        return None
    lo, hi = swap["window_s"]
    text = (
        f"{swap['window_rps']:.0f} req/s from {lo:+.1f} s to {hi:+.1f} s of the move vs "
        f"{swap['steady_rps']:.0f} req/s before it (every answer from the new version "
        f"{swap['swap_s']:.1f} s after the move): {swap['window_ratio']:.2f}x"
    )
    return swap["window_ratio"], text


def rows(results: dict[str, Any]) -> tuple[str, list[list[Any]]] | None:
    """RESULTS.md's section: the setup and figures, then a row per second around the move."""
    swap = results.get("swap")
    if not swap:
        return None
    lo, hi = swap["window_s"]
    after = swap["after_rps"]
    setup = (
        f"`dockyard serve small@{swap['alias']} --workers {swap['workers']}` (every other "
        "default), "
        f"closed loop of {swap['connections']} keep-alive connections for {swap['seconds']:g} s "
        f"(benchmarks/loadgen.py); `{swap['alias']}` moved from version {swap['old_version']} to "
        f"{swap['new_version']} {swap['moved_after_s']:.1f} s into the run, from another process "
        f"(benchmarks/swap.py). Steady state ({STEADY_S[0]:g}-{STEADY_S[1]:g} s): "
        f"{swap['steady_rps']:.0f} req/s. First answer from the new version "
        f"{swap['first_new_after_s']:.1f} s after the move, every answer {swap['swap_s']:.1f} s "
        f"after it. Window {lo:+.1f} s to {hi:+.1f} s: {swap['window_rps']:.0f} req/s "
        f"({swap['window_ratio']:.2f} x steady), its slowest second "
        f"{swap['lowest_second_rps']:.0f} req/s"
        + (f"; after the swap {after:.0f} req/s" if after is not None else "")
        + f". Failed: {swap['failed']} of {swap['requests']}; p99 {swap['p99_ms']:.1f} ms, max "
        f"{swap['max_ms']:.1f} ms over the run."
    )
    return setup, swap["per_second"]
