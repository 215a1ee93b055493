"""A stage's numbers from its tally, and the saturation rule."""

from __future__ import annotations

import pytest

from dockyard.loadtest.connections import TIMEOUT, Tally
from dockyard.loadtest.stats import percentiles_ms, saturation, summarize


def _tally(ok: int, errors: int, latency_s: float = 0.002) -> Tally:
    tally = Tally()
    tally.sent = ok + errors
    for i in range(ok):
        tally.success(latency_s * (1 + i % 10))
    for _ in range(errors):
        tally.error(TIMEOUT)
    return tally


def test_percentiles_never_decrease() -> None:
    p50, p95, p99, most, mean = percentiles_ms([0.001 * i for i in range(1, 1001)])
    assert p50 is not None
    assert p95 is not None
    assert p99 is not None
    assert most is not None
    assert p50 <= p95 <= p99 <= most == pytest.approx(1000.0)
    assert mean == pytest.approx(500.5)


def test_no_successes_leave_no_latencies() -> None:
    assert percentiles_ms([]) == (None, None, None, None, None)


def test_a_stage_that_keeps_up_is_not_saturated() -> None:
    stage = summarize(
        _tally(1000, 0), mode="open", offered_rps=100, connections=8, duration_s=10, elapsed_s=10
    )
    assert (stage.sent, stage.completed, stage.errors) == (1000, 1000, 0)
    assert stage.achieved_rps == pytest.approx(100.0)
    assert not stage.saturated
    assert stage.to_dict()["error_share"] == 0.0


def test_falling_behind_the_offered_rate_is_saturation() -> None:
    stage = summarize(
        _tally(900, 0), mode="open", offered_rps=100, connections=8, duration_s=10, elapsed_s=10
    )
    assert stage.saturated
    assert "under 95% of the offered 100 req/s" in stage.reason


def test_many_errors_are_saturation() -> None:
    stage = summarize(
        _tally(990, 60), mode="open", offered_rps=100, connections=8, duration_s=10, elapsed_s=9.9
    )
    assert stage.saturated
    assert stage.error_kinds == {TIMEOUT: 60}
    assert "6% of the requests failed" in stage.reason


def test_closed_loop_saturates_when_more_clients_add_no_throughput() -> None:
    first = summarize(
        _tally(1000, 0), mode="closed", offered_rps=None, connections=1, duration_s=1, elapsed_s=1
    )
    more = summarize(
        _tally(3000, 0), mode="closed", offered_rps=None, connections=8, duration_s=1, elapsed_s=1
    )
    flat = summarize(
        _tally(3100, 0),
        mode="closed",
        offered_rps=None,
        connections=64,
        duration_s=1,
        elapsed_s=1,
        earlier=[first, more],
    )
    assert saturation(more, [first]) == ""
    assert flat.saturated
    assert "64 clients" in flat.reason
