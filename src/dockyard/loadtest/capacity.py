"""Capacity planning: how many requests a second one worker sustains within a p99 limit (rising
open-loop rates, one step of refinement, the best rate repeated), and what that means for a
target throughput: workers, cores and replicas.

A Dockyard worker is one event loop on one core (its model's batches run on that core or one
thread beside it), so throughput grows with workers only while each has a core of its own: the
plan counts one core per worker, and replicas of at most a machine's cores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dockyard.loadtest.runner import OPEN, Display, Load, run_stage
from dockyard.loadtest.stats import StageResult
from dockyard.loadtest.target import Target

HIGH_SPREAD = 0.10
MEDIUM_SPREAD = 0.25
NEAR_LIMIT = 0.8
"""A repeat whose p99 is above this share of the limit makes a high confidence medium."""


@dataclass(frozen=True)
class Search:
    """The rates tried: ``start_rps`` times ``growth`` each stage, up to ``max_rps``."""

    p99_limit_ms: float
    start_rps: float
    growth: float
    max_rps: float
    duration_s: float
    timeout_s: float
    max_in_flight: int
    repeats: int


@dataclass(frozen=True)
class Measurement:
    """Every stage run, the highest rate that held the limit (None: not even the first) and
    the stages at that rate (the repeats)."""

    stages: Sequence[StageResult]
    sustained_rate: float | None
    repeats: Sequence[StageResult]
    limited_by: str


def holds(stage: StageResult, p99_limit_ms: float) -> bool:
    """Whether a stage kept up with its rate, with few errors, within the p99 limit."""
    return not stage.saturated and stage.p99_ms is not None and stage.p99_ms <= p99_limit_ms


def _why_not(stage: StageResult, p99_limit_ms: float) -> str:
    if stage.saturated:
        return f"{stage.label}: {stage.reason}"
    p99 = "no successful answer" if stage.p99_ms is None else f"p99 {stage.p99_ms:.1f} ms"
    return f"{stage.label}: {p99} over the {p99_limit_ms:g} ms limit"


async def measure(
    target: Target, requests: list[bytes], search: Search, display: Display | None = None
) -> Measurement:
    """Rising rates until one fails the limit; one stage halfway between the last that held and
    the first that failed; then the best rate again until it has run ``repeats`` times."""
    load = Load(OPEN, search.duration_s, search.timeout_s, search.max_in_flight)
    stages: list[StageResult] = []

    async def stage_at(rate: float) -> StageResult:
        stage = await run_stage(target, requests, load, rate, display=display)
        stages.append(stage)
        return stage

    best: float | None = None
    failed: StageResult | None = None
    rate = search.start_rps
    while rate <= search.max_rps:
        stage = await stage_at(rate)
        if not holds(stage, search.p99_limit_ms):
            failed = stage
            break
        best = rate
        rate = rate * search.growth
    limited_by = f"reached --max-rate {search.max_rps:g} req/s"
    if failed is not None:
        limited_by = _why_not(failed, search.p99_limit_ms)
        if best is not None and failed.offered_rps is not None:
            middle = round((best + failed.offered_rps) / 2)
            if best < middle < failed.offered_rps and holds(
                await stage_at(middle), search.p99_limit_ms
            ):
                best = middle
    if best is None:
        return Measurement(stages, None, [], limited_by)
    while sum(1 for s in stages if s.offered_rps == best) < search.repeats:
        await stage_at(best)
    return Measurement(stages, best, [s for s in stages if s.offered_rps == best], limited_by)


@dataclass(frozen=True)
class CapacityPlan:
    """The recommendation, and what it rests on."""

    target_rps: float
    p99_limit_ms: float
    per_worker_rps: float | None
    workers: int | None
    cores: int | None
    replicas: int | None
    workers_per_replica: int | None
    cores_per_replica: int
    spread: float | None
    """(max − min) / max of the repeated stages' throughput."""
    confidence: str
    summary: str
    notes: list[str] = field(default_factory=list)
    stages: Sequence[StageResult] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [stage.to_dict() for stage in self.stages]
        return data


def plan(
    measurement: Measurement,
    *,
    target_rps: float,
    p99_limit_ms: float,
    cores_per_replica: int,
    how: str,
) -> CapacityPlan:
    """Workers = ceil(target / per-worker rate), a core each; replicas of at most
    ``cores_per_replica`` workers. The per-worker rate is the lowest throughput of the repeats of
    the best rate that held (the cautious one). ``how`` says how it was measured."""
    notes = [how, f"stopped: {measurement.limited_by}"]
    passed = [s for s in measurement.repeats if holds(s, p99_limit_ms)]
    if not passed:
        first = measurement.stages[0].label if measurement.stages else "the first rate"
        return CapacityPlan(
            target_rps,
            p99_limit_ms,
            None,
            None,
            None,
            None,
            None,
            cores_per_replica,
            None,
            "none",
            f"one worker did not hold p99 ≤ {p99_limit_ms:g} ms even at {first}: lower "
            "--start-rate, raise --p99 or make the model faster",
            notes,
            measurement.stages,
        )
    per_worker = min(s.achieved_rps for s in passed)
    rates = [s.achieved_rps for s in measurement.repeats]
    spread = (max(rates) - min(rates)) / max(rates) if max(rates) > 0 else 0.0
    workers = max(1, math.ceil(target_rps / per_worker))
    replicas = max(1, math.ceil(workers / cores_per_replica))
    per_replica = math.ceil(workers / replicas)
    p99s = [s.p99_ms for s in measurement.repeats if s.p99_ms is not None]
    confidence = _confidence(spread, len(passed) == len(measurement.repeats), len(rates))
    if confidence == "high" and max(p99s) > NEAR_LIMIT * p99_limit_ms:
        confidence = "medium"  # a little more noise and a repeat would fail the limit
    notes.append(
        f"{measurement.sustained_rate:g} req/s ran {len(rates)} time(s): "
        f"{min(rates):.0f}–{max(rates):.0f} req/s, p99 {min(p99s):.1f}–{max(p99s):.1f} ms "
        f"(spread {spread:.0%}): confidence {confidence}"
    )
    if measurement.limited_by.startswith("reached --max-rate"):
        notes.append("the limit was never reached: one worker may sustain more than measured")
    notes.append(
        "workers beyond a machine's cores add no throughput (each worker is one event loop on "
        "one core): plan one core per worker"
    )
    summary = (
        f"one worker sustains {per_worker:.0f} req/s at p99 ≤ {p99_limit_ms:g} ms → "
        f"{workers} worker{'s' if workers > 1 else ''} on {workers} core"
        f"{'s' if workers > 1 else ''} for {target_rps:g} req/s: {replicas} "
        f"replica{'s' if replicas > 1 else ''} of {per_replica} worker"
        f"{'s' if per_replica > 1 else ''} (dockyard serve --workers {per_replica}) "
        f"on machines of {cores_per_replica} cores"
    )
    return CapacityPlan(
        target_rps,
        p99_limit_ms,
        per_worker,
        workers,
        workers,
        replicas,
        per_replica,
        cores_per_replica,
        spread,
        confidence,
        summary,
        notes,
        measurement.stages,
    )


def _confidence(spread: float, all_held: bool, runs: int) -> str:
    if runs < 2 or not all_held or spread > MEDIUM_SPREAD:
        return "low"
    return "high" if spread <= HIGH_SPREAD else "medium"
