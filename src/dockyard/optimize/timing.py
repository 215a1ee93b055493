"""How long a model takes to predict, at batch 1 and at the serving batch size, measured the same
way for the source and the converted model: a few calls to warm up, then calls until a time
budget is spent, and the median call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dockyard.runtimes.base import Runtime

WARMUP_CALLS = 3
BUDGET_S = 0.4
MIN_CALLS = 5
MAX_CALLS = 500


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per call at batch 1 and at ``batch`` rows."""

    batch: int
    single_ms: float
    batch_ms: float

    def to_dict(self) -> dict[str, float]:
        return {"1": self.single_ms, str(self.batch): self.batch_ms}


def measure(runtime: Runtime, inputs: Any, batch: int) -> Latency:
    """The runtime's median call on one row and on ``batch`` rows of ``inputs`` (a 2-D table or
    a dict of named tensors; rows repeat when it has fewer), asking for every output as a request
    without ``outputs`` does."""
    return Latency(
        batch, _median_ms(runtime, _take(inputs, 1)), _median_ms(runtime, _take(inputs, batch))
    )


def _take(inputs: Any, rows: int) -> Any:
    if isinstance(inputs, Mapping):
        return {name: _take(value, rows) for name, value in inputs.items()}
    table = np.asarray(inputs)
    return table[np.arange(rows) % len(table)]


def _median_ms(runtime: Runtime, x: Any) -> float:
    for _ in range(WARMUP_CALLS):
        runtime.predict(x, ())
    times: list[float] = []
    deadline = time.monotonic() + BUDGET_S
    while len(times) < MIN_CALLS or (time.monotonic() < deadline and len(times) < MAX_CALLS):
        start = time.perf_counter()
        runtime.predict(x, ())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
