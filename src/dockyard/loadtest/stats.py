"""One stage's numbers: requests sent, answered with success, failed (by kind), the achieved
throughput and the latency percentiles; and the rule that says a stage is past saturation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from dockyard.loadtest.connections import Tally

SATURATION_SHARE = 0.95
"""A stage whose successful answers per second fall below this share of the offered rate is past
saturation: the server no longer keeps up with the arrivals."""
ERROR_SHARE = 0.05
"""… as is a stage where more than this share of the requests failed."""
CLOSED_GAIN = 1.05
"""Closed loop: a stage past saturation gains less than this factor of throughput over the best
earlier stage (more clients only queue)."""


@dataclass(frozen=True)
class StageResult:
    """The outcome of one stage. ``offered_rps`` is the open loop's arrival rate (None in the
    closed loop, where ``connections`` clients each wait for their answer); latencies are in
    milliseconds over the successful requests (None when there were none)."""

    mode: str
    offered_rps: float | None
    connections: int
    duration_s: float
    elapsed_s: float
    sent: int
    completed: int
    errors: int
    achieved_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    generator_lag_p99_ms: float
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    saturated: bool = False
    reason: str = ""

    @property
    def error_share(self) -> float:
        return self.errors / self.sent if self.sent else 0.0

    @property
    def label(self) -> str:
        if self.offered_rps is not None:
            return f"{self.offered_rps:g} req/s"
        return f"{self.connections} conn"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_kinds"] = dict(self.error_kinds)
        data["error_share"] = self.error_share
        return data


Milliseconds = tuple[float | None, float | None, float | None, float | None, float | None]


def percentiles_ms(latencies_s: Sequence[float]) -> Milliseconds:
    """p50, p95, p99, max and mean in milliseconds (linear interpolation, so they never
    decrease from one percentile to the next); None each for no values."""
    if not latencies_s:
        return None, None, None, None, None
    values = np.asarray(latencies_s, dtype=np.float64) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(values.max()), float(values.mean())


def summarize(
    tally: Tally,
    *,
    mode: str,
    offered_rps: float | None,
    connections: int,
    duration_s: float,
    elapsed_s: float,
    earlier: Sequence[StageResult] = (),
) -> StageResult:
    """The stage's result from its tally; ``earlier`` stages decide the closed loop's
    saturation."""
    achieved = tally.ok / elapsed_s if elapsed_s > 0 else 0.0
    lag = float(np.percentile(tally.lags, 99) * 1000) if tally.lags else 0.0
    p50, p95, p99, most, mean = percentiles_ms(tally.latencies)
    stage = StageResult(
        mode=mode,
        offered_rps=offered_rps,
        connections=connections,
        duration_s=duration_s,
        elapsed_s=elapsed_s,
        sent=tally.sent,
        completed=tally.ok,
        errors=tally.error_count,
        achieved_rps=achieved,
        generator_lag_p99_ms=lag,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=most,
        mean_ms=mean,
        error_kinds=dict(tally.errors.most_common()),
    )
    reason = saturation(stage, earlier)
    return replace(stage, saturated=bool(reason), reason=reason)


def saturation(stage: StageResult, earlier: Sequence[StageResult] = ()) -> str:
    """Why ``stage`` is past saturation, or "" when it is not."""
    if stage.error_share > ERROR_SHARE:
        return f"{stage.error_share:.0%} of the requests failed (more than {ERROR_SHARE:.0%})"
    if stage.offered_rps is not None:
        if stage.achieved_rps < SATURATION_SHARE * stage.offered_rps:
            return (
                f"{stage.achieved_rps:.0f} successful req/s is under {SATURATION_SHARE:.0%} "
                f"of the offered {stage.offered_rps:g} req/s"
            )
        return ""
    best = max((s.achieved_rps for s in earlier), default=0.0)
    if best > 0 and stage.achieved_rps < CLOSED_GAIN * best:
        return (
            f"{stage.connections} clients reached {stage.achieved_rps:.0f} req/s, no more than "
            f"{CLOSED_GAIN - 1:.0%} over the best earlier stage ({best:.0f} req/s)"
        )
    return ""
