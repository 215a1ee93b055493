"""The batcher's bounded queue: past ``max_queue`` rows waiting a request is refused at once, never
queued; a request whose deadline passed while it waited is never run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from dockyard.errors import Overloaded, PredictionTimeout
from dockyard.serving.batching import Batcher

WAIT_S = 10.0


# inline_budget_s=0: every batch runs on the model's thread, as a slow model's do.


class HeldModel:
    """Echoes its input's first column; holds every batch until released, recording its rows."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.batches.append([float(v) for v in x[:, 0]])
        self.entered.release()
        assert self.release.wait(WAIT_S)
        return {"same": x[:, 0]}


def _rows(value: float, rows: int = 1) -> np.ndarray:
    return np.full((rows, 1), value)


async def _busy(model: HeldModel, batcher: Batcher) -> asyncio.Task[dict[str, np.ndarray]]:
    """A first request the model is holding: what comes next waits in the queue."""
    running = asyncio.create_task(batcher.submit(_rows(0), ()))
    assert await asyncio.to_thread(model.entered.acquire, True, WAIT_S)
    return running


async def test_past_the_bound_a_request_is_refused_at_once_and_the_queued_ones_answer() -> None:
    model = HeldModel()
    batcher = Batcher(model.predict, name="held:1", max_queue=3, loop_cost_s=0, inline_budget_s=0.0)
    running = await _busy(model, batcher)
    queued = [asyncio.create_task(batcher.submit(_rows(v), ())) for v in (1, 2, 3)]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 3

    with pytest.raises(
        Overloaded, match=r"held:1 is overloaded: 3 rows are waiting \(max_queue 3\)"
    ):
        await batcher.submit(_rows(4), ())
    assert batcher.queue_depth == 3  # never queued
    assert batcher.shed == 1

    model.release.set()
    results = await asyncio.gather(running, *queued)
    assert [float(r["same"][0]) for r in results] == [0, 1, 2, 3]
    assert model.batches == [[0], [1, 2, 3]]  # the refused request never reached the model
    # The queue drained: requests are admitted again.
    assert float((await batcher.submit(_rows(5), ()))["same"][0]) == 5
    batcher.close()


async def test_the_bound_counts_rows_and_a_big_request_still_runs_on_an_empty_queue() -> None:
    model = HeldModel()
    batcher = Batcher(model.predict, name="m", max_queue=4, loop_cost_s=0, inline_budget_s=0.0)
    running = await _busy(model, batcher)
    big = asyncio.create_task(batcher.submit(_rows(1, rows=6), ()))  # alone in the queue
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit(_rows(2), ())
    model.release.set()
    await running
    assert len((await big)["same"]) == 6

    model.release.clear()
    model.entered = threading.Semaphore(0)
    running = await _busy(model, batcher)
    two = asyncio.create_task(batcher.submit(_rows(3, rows=2), ()))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="2 rows are waiting"):
        await batcher.submit(_rows(4, rows=3), ())  # 2 + 3 rows would pass 4
    fits = asyncio.create_task(batcher.submit(_rows(5, rows=2), ()))  # 2 + 2 do not
    model.release.set()
    await asyncio.gather(running, two, fits)
    assert batcher.shed == 2
    batcher.close()


async def test_no_bound_when_max_queue_is_zero() -> None:
    model = HeldModel()
    batcher = Batcher(
        model.predict,
        name="m",
        max_batch_size=1000,
        max_queue=0,
        loop_cost_s=0,
        inline_budget_s=0.0,
    )
    running = await _busy(model, batcher)
    queued = [asyncio.create_task(batcher.submit(_rows(v), ())) for v in range(500)]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 500
    model.release.set()
    await asyncio.gather(running, *queued)
    assert batcher.shed == 0
    batcher.close()


async def test_a_request_past_its_deadline_while_queued_is_answered_and_never_run() -> None:
    model = HeldModel()
    batcher = Batcher(
        model.predict, name="m", timeout_s=0.2, max_queue=2, loop_cost_s=0, inline_budget_s=0.0
    )
    running = await _busy(model, batcher)
    late = asyncio.create_task(batcher.submit(_rows(7), ()))
    with pytest.raises(PredictionTimeout):
        await late
    with pytest.raises(PredictionTimeout):
        await running
    model.release.set()
    # The next request runs once the held batch ends; the expired one never reached the model,
    # and no longer counts against the bound.
    await batcher.submit(_rows(8), ())
    assert [8.0] in model.batches
    assert [7.0] not in model.batches
    assert batcher.queue_depth == 0
    batcher.close()
