"""The capacity plan's arithmetic from measured stages: workers, cores, replicas, confidence."""

from __future__ import annotations

import math

import pytest

from dockyard.loadtest.capacity import Measurement, plan
from dockyard.loadtest.stats import StageResult


def _stage(rate: float, achieved: float, p99: float, *, saturated: bool = False) -> StageResult:
    return StageResult(
        mode="open",
        offered_rps=rate,
        connections=256,
        duration_s=1.0,
        elapsed_s=1.0,
        sent=int(rate),
        completed=int(achieved),
        errors=int(rate) - int(achieved),
        achieved_rps=achieved,
        p50_ms=p99 / 4,
        p95_ms=p99 / 2,
        p99_ms=p99,
        max_ms=p99 * 2,
        mean_ms=p99 / 3,
        generator_lag_p99_ms=0.5,
        saturated=saturated,
        reason="behind" if saturated else "",
    )


def _plan(measurement: Measurement, target: float = 2000.0, cores: int = 2) -> dict[str, object]:
    return plan(
        measurement, target_rps=target, p99_limit_ms=50.0, cores_per_replica=cores, how="test"
    ).to_dict()


def test_workers_cover_the_target_at_the_slowest_repeat() -> None:
    repeats = [_stage(800, 790, 30), _stage(800, 760, 40)]
    measured = Measurement([_stage(400, 400, 10), *repeats], 800, repeats, "1600 req/s: behind")

    result = _plan(measured)

    assert result["per_worker_rps"] == 760
    assert result["workers"] == math.ceil(2000 / 760) == 3
    assert result["cores"] == 3
    assert result["replicas"] == 2
    assert result["workers_per_replica"] == 2
    assert result["spread"] == pytest.approx(30 / 790)
    assert result["confidence"] == "high"
    assert str(result["summary"]).startswith("one worker sustains 760 req/s at p99 ≤ 50 ms → 3")


def test_a_repeat_over_the_limit_lowers_confidence() -> None:
    repeats = [_stage(800, 790, 30), _stage(800, 700, 70)]
    result = _plan(Measurement(repeats, 800, repeats, "x"), target=500)

    assert result["per_worker_rps"] == 790  # the repeat that held
    assert result["workers"] == 1
    assert result["replicas"] == 1
    assert result["confidence"] == "low"


def test_nothing_held_means_no_recommendation() -> None:
    failed = [_stage(50, 20, 900, saturated=True)]
    result = _plan(Measurement(failed, None, [], "50 req/s: behind"))

    assert result["workers"] is None
    assert result["confidence"] == "none"
    assert "did not hold p99 ≤ 50 ms even at 50 req/s" in str(result["summary"])
