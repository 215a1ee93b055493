"""Stages one after another: each an open-loop rate or a closed-loop concurrency, on fresh
connections, stopping after the first stage past saturation (a server past it only queues more).

The generator runs on uvloop when it is installed (it comes with uvicorn's standard extras): the
event loop's own cost per request is about half of asyncio's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from dockyard.loadtest.closed_loop import closed_loop
from dockyard.loadtest.connections import Tally
from dockyard.loadtest.open_loop import open_loop
from dockyard.loadtest.stats import StageResult, summarize
from dockyard.loadtest.target import Target

OPEN = "open"
CLOSED = "closed"
PROGRESS_S = 0.2
T = TypeVar("T")


class Display(Protocol):
    """Where a run reports its progress (a Rich live display, or nothing)."""

    def stage_started(self, label: str, duration_s: float) -> None: ...

    def stage_progress(self, tally: Tally, elapsed_s: float) -> None: ...

    def stage_ended(self, stage: StageResult) -> None: ...


class Silent:
    """A display that shows nothing (``--json``, tests)."""

    def stage_started(self, label: str, duration_s: float) -> None:
        return None

    def stage_progress(self, tally: Tally, elapsed_s: float) -> None:
        return None

    def stage_ended(self, stage: StageResult) -> None:
        return None


@dataclass(frozen=True)
class Load:
    """How each stage loads the server: ``mode`` open (``level`` = requests per second) or closed
    (``level`` = concurrent clients)."""

    mode: str
    duration_s: float
    timeout_s: float
    max_in_flight: int


async def run_stage(
    target: Target,
    requests: list[bytes],
    load: Load,
    level: float,
    *,
    earlier: Sequence[StageResult] = (),
    display: Display | None = None,
) -> StageResult:
    """One stage at ``level``, with its progress shown every ``PROGRESS_S``."""
    display = display or Silent()
    tally = Tally()
    label = f"{level:g} req/s" if load.mode == OPEN else f"{int(level)} connections"
    display.stage_started(label, load.duration_s)
    began = time.monotonic()

    async def report() -> None:
        while True:
            display.stage_progress(tally, time.monotonic() - began)
            await asyncio.sleep(PROGRESS_S)

    reporter = asyncio.get_running_loop().create_task(report())
    try:
        if load.mode == OPEN:
            elapsed = await open_loop(
                target,
                requests,
                rate=level,
                duration_s=load.duration_s,
                max_in_flight=load.max_in_flight,
                timeout_s=load.timeout_s,
                tally=tally,
            )
        else:
            elapsed = await closed_loop(
                target,
                requests,
                connections=int(level),
                duration_s=load.duration_s,
                timeout_s=load.timeout_s,
                tally=tally,
            )
    finally:
        reporter.cancel()
    stage = summarize(
        tally,
        mode=load.mode,
        offered_rps=level if load.mode == OPEN else None,
        connections=load.max_in_flight if load.mode == OPEN else int(level),
        duration_s=load.duration_s,
        elapsed_s=elapsed,
        earlier=earlier,
    )
    display.stage_ended(stage)
    return stage


async def run_stages(
    target: Target,
    requests: list[bytes],
    load: Load,
    levels: Sequence[float],
    display: Display | None = None,
) -> list[StageResult]:
    """Each level in turn, until one is past saturation (it is kept: it shows where)."""
    stages: list[StageResult] = []
    for level in levels:
        stage = await run_stage(target, requests, load, level, earlier=stages, display=display)
        stages.append(stage)
        if stage.saturated:
            break
    return stages


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``make`` gives on a fresh event loop, uvloop's when installed."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop

    async def main() -> T:
        return await make()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
