"""The adaptive batcher: greedy when idle, batches what queues while busy, isolates failures."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from dockyard.errors import PredictionFailed, PredictionTimeout
from dockyard.serving.batching import Batcher

WAIT_S = 10.0


class GatedModel:
    """Doubles its input; blocks inside predict until released, recording each batch's rows."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.release.set()

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.batches.append(len(x))
        self.entered.release()
        assert self.release.wait(WAIT_S)
        if (x < 0).any():
            raise ValueError("negative input")
        return {"double": x[:, 0] * 2, "same": x[:, 0]}


async def _entered(model: GatedModel) -> None:
    assert await asyncio.to_thread(model.entered.acquire, True, WAIT_S)


def _row(value: float, rows: int = 1) -> np.ndarray:
    return np.full((rows, 1), value)


async def test_idle_model_runs_a_lone_request_at_once_and_queued_ones_together() -> None:
    model = GatedModel()
    model.release.clear()
    batcher = Batcher(model.predict, name="m", max_batch_size=64, max_delay_s=0.0, loop_cost_s=0)
    first = asyncio.create_task(batcher.submit(_row(1), ()))
    # The lone request reaches the model before anything else is submitted: no timer wait.
    await _entered(model)
    assert model.batches == [1]
    queued = [asyncio.create_task(batcher.submit(_row(v), ())) for v in (2, 3, 4)]
    await asyncio.sleep(0)
    model.release.set()
    results = await asyncio.gather(first, *queued)
    assert model.batches == [1, 3]
    assert batcher.batches_run == 2
    assert [float(r["double"][0]) for r in results] == [2.0, 4.0, 6.0, 8.0]
    batcher.close()


async def test_results_stay_with_their_requests_under_concurrency() -> None:
    model = GatedModel()
    batcher = Batcher(model.predict, name="m", max_batch_size=16)
    sizes = [1 + (i % 5) for i in range(60)]
    results = await asyncio.gather(
        *(batcher.submit(_row(float(i), rows), ("double",)) for i, rows in enumerate(sizes))
    )
    for i, (rows, result) in enumerate(zip(sizes, results, strict=True)):
        assert list(result) == ["double"]
        np.testing.assert_array_equal(result["double"], np.full(rows, 2.0 * i))
    assert max(model.batches) <= 16
    assert len(model.batches) < len(sizes)
    batcher.close()


async def test_a_failing_request_fails_alone() -> None:
    model = GatedModel()
    model.release.clear()
    batcher = Batcher(model.predict, name="m", max_batch_size=64, loop_cost_s=0)
    blocker = asyncio.create_task(batcher.submit(_row(0), ()))
    await _entered(model)
    values = [1.0, -1.0, 2.0, 3.0]
    tasks = [asyncio.create_task(batcher.submit(_row(v), ())) for v in values]
    await asyncio.sleep(0)
    model.release.set()
    outcomes = await asyncio.gather(blocker, *tasks, return_exceptions=True)
    assert isinstance(outcomes[2], PredictionFailed)
    assert "ValueError" in str(outcomes[2])
    for value, outcome in zip(values, outcomes[1:], strict=True):
        if value >= 0:
            assert isinstance(outcome, dict)
            assert float(outcome["double"][0]) == 2 * value
    assert model.batches[:2] == [1, 4]
    batcher.close()


@pytest.mark.parametrize(("loop_cost_s", "split"), [(0.0, False), (60.0, True)])
async def test_requests_are_split_in_halves_when_the_loop_has_more_to_do_than_the_model(
    loop_cost_s: float, split: bool
) -> None:
    model = GatedModel()
    model.release.clear()
    batcher = Batcher(model.predict, name="m", max_batch_size=64, loop_cost_s=loop_cost_s)
    first = asyncio.create_task(batcher.submit(_row(0), ()))
    await _entered(model)
    queued = [asyncio.create_task(batcher.submit(_row(v), ())) for v in range(1, 9)]
    await asyncio.sleep(0)
    model.release.set()
    results = await asyncio.gather(first, *queued)
    assert [float(r["same"][0]) for r in results] == [float(v) for v in range(9)]
    assert model.batches[0] == 1
    if split:  # nine rows outstanding: at most five in one batch, the rest in the next ones
        assert len(model.batches) >= 3
        assert max(model.batches[1:]) <= 5
    else:
        assert model.batches == [1, 8]
    batcher.close()


async def test_batching_off_runs_one_request_per_call() -> None:
    model = GatedModel()
    batcher = Batcher(model.predict, name="m", enabled=False)
    await asyncio.gather(*(batcher.submit(_row(1), ()) for _ in range(5)))
    assert model.batches == [1, 1, 1, 1, 1]
    batcher.close()


async def test_max_delay_waits_for_a_fuller_batch() -> None:
    model = GatedModel()
    batcher = Batcher(model.predict, name="m", max_batch_size=3, max_delay_s=5.0)
    results = await asyncio.gather(*(batcher.submit(_row(v), ()) for v in (1, 2, 3)))
    # The first request waited for two more rows instead of running alone.
    assert model.batches == [3]
    assert [float(r["same"][0]) for r in results] == [1.0, 2.0, 3.0]
    batcher.close()


async def test_deadline_gives_prediction_timeout() -> None:
    model = GatedModel()
    model.release.clear()
    batcher = Batcher(model.predict, name="m", timeout_s=0.05)
    with pytest.raises(PredictionTimeout, match="did not finish"):
        await batcher.submit(_row(1), ())
    model.release.set()
    batcher.close()


async def test_wrong_output_length_is_a_prediction_failure() -> None:
    def short(x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {"predict": np.zeros(len(x) - 1)}

    batcher = Batcher(short, name="m")
    with pytest.raises(PredictionFailed, match="returned 1 rows"):
        await batcher.submit(_row(1, rows=2), ())
    batcher.close()


class RecordingModel:
    """Doubles its input and records which thread ran each batch."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        return {"double": x[:, 0] * 2}


async def test_a_model_that_proved_fast_runs_on_the_event_loop_thread() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, name="fast", inline_budget_s=60.0)
    for value in range(3):
        result = await batcher.submit(_row(value), ())
        assert float(result["double"][0]) == 2 * value
    # The first batch is timed on the model's thread; once known to be fast, batches run inline.
    loop_thread = threading.current_thread().name
    assert model.threads[0] != loop_thread
    assert model.threads[1:] == [loop_thread, loop_thread]
    assert batcher.batches_inline == 2
    batcher.close()


async def test_a_zero_budget_keeps_every_batch_off_the_event_loop() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, name="threaded", inline_budget_s=0.0)
    for value in range(3):
        await batcher.submit(_row(value), ())
    assert threading.current_thread().name not in model.threads
    assert batcher.batches_inline == 0
    batcher.close()


async def test_a_lone_client_skips_the_gathering_turn_and_a_burst_still_batches() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, name="fast", inline_budget_s=60.0)
    for value in range(20):
        await batcher.submit(_row(value), ())
        for _ in range(3):  # a client's round trip: the batcher is idle again before the next
            await asyncio.sleep(0)
    assert batcher.turns_skipped > 10
    before = batcher.batches_run
    burst = await asyncio.gather(*(batcher.submit(_row(v), ()) for v in range(64)))
    assert [float(r["double"][0]) for r in burst] == [2.0 * v for v in range(64)]
    # At most PROBE_EVERY requests run alone before a probing turn gathers the rest of the burst.
    assert batcher.batches_run - before <= 9
    batcher.close()


async def test_a_lone_clients_request_runs_without_queue_or_loop_turn_and_fails_alone() -> None:
    model = GatedModel()
    batcher = Batcher(model.predict, name="fast", inline_budget_s=60.0)
    for value in range(4):  # the first on the model's thread, the next leads take the turn
        await batcher.submit(_row(value), ())
    loop = asyncio.get_running_loop()
    turns = 0

    def count_turn() -> None:
        nonlocal turns
        turns += 1

    skipped = batcher.turns_skipped
    loop.call_soon(count_turn)
    result = await batcher.submit(_row(5), ("double",))
    assert batcher.turns_skipped == skipped + 1
    assert turns == 0  # answered before the loop ran anything else
    assert list(result) == ["double"]
    assert float(result["double"][0]) == 10.0
    with pytest.raises(PredictionFailed, match="model failed to predict: ValueError"):
        await batcher.submit(_row(-1), ())
    assert batcher.turns_skipped == skipped + 2
    assert float((await batcher.submit(_row(6), ()))["same"][0]) == 6.0
    await asyncio.sleep(0)
    assert turns == 1
    batcher.close()


class SometimesSlowModel:
    """Fast, except on a negative input, where it sleeps far past any deadline."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        if (x < 0).any():
            time.sleep(3)
        return {"double": x[:, 0] * 2}


async def _loop_stall_while(task: asyncio.Task[Any]) -> float:
    """The longest the event loop went without running a callback while ``task`` was pending."""
    worst = 0.0
    while not task.done():
        before = time.monotonic()
        await asyncio.sleep(0.005)
        worst = max(worst, time.monotonic() - before - 0.005)
    return worst


# pytest-timeout's default method holds SIGALRM, which a served process leaves to Dockyard.
@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("lone", [True, False], ids=["lone client", "batch"])
async def test_an_inline_batch_that_overruns_moves_off_the_loop_and_meets_its_deadline(
    lone: bool,
) -> None:
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    model = SometimesSlowModel()
    batcher = Batcher(model.predict, name="moody", inline_budget_s=0.01, timeout_s=0.5)
    try:
        # The first batch proves the model fast; the next runs inline as a leader, and from the
        # third on a lone client's requests skip the gathering turn.
        for value in range(4 if lone else 2):
            await batcher.submit(_row(value), ())
        assert batcher._lone() is lone
        skipped = batcher.turns_skipped
        started = time.monotonic()
        slow = asyncio.create_task(batcher.submit(_row(-1), ()))
        others = [] if lone else [asyncio.create_task(batcher.submit(_row(v), ())) for v in (7, 8)]
        stall = await _loop_stall_while(slow)
        with pytest.raises(PredictionTimeout):
            await slow
        assert 0.45 < time.monotonic() - started < 1.5
        # The loop was held for about the limit (5 x 10 ms), never for the model's 3 s.
        assert stall < 0.25
        assert batcher.overruns == 1
        assert batcher.turns_skipped == skipped + lone
        assert model.threads[-1].startswith("predict-moody")
        for other in others:  # batch-mates of the slow request queue behind it on the thread
            with pytest.raises(PredictionTimeout):
                await other
    finally:
        batcher.close()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("lone", [True, False], ids=["lone client", "batch"])
async def test_a_batch_interrupted_on_the_loop_and_run_again_counts_its_rows_once(
    lone: bool,
) -> None:
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    slow_left = [1]

    def predict(x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        if (x < 0).any() and slow_left[0]:
            slow_left[0] -= 1
            time.sleep(0.3)  # past the inline limit on the loop; fast when run again
        return {"double": x[:, 0] * 2}

    counted: list[int] = []
    batcher = Batcher(predict, name="once", inline_budget_s=0.01, timeout_s=5)
    batcher.on_batch = counted.append
    try:
        for value in range(4 if lone else 2):
            await batcher.submit(_row(value), ())
        assert batcher._lone() is lone
        before = len(counted)
        slow = asyncio.create_task(batcher.submit(_row(-1, 2), ()))
        others = [] if lone else [asyncio.create_task(batcher.submit(_row(v), ())) for v in (7, 8)]
        await asyncio.gather(slow, *others)
        assert batcher.overruns == 1
        # The interrupted batch is counted once, when the model's thread has run it.
        assert sum(counted[before:]) == 2 + 2 * (not lone)
        if lone:
            assert counted[before:] == [2]
    finally:
        batcher.close()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def test_the_thread_setup_runs_on_the_models_thread() -> None:
    seen: list[str] = []
    batcher = Batcher(
        RecordingModel().predict,
        name="setup",
        inline_budget_s=0.0,
        thread_setup=lambda: seen.append(threading.current_thread().name),
    )
    await batcher.submit(_row(1), ())
    await batcher.submit(_row(2), ())
    assert len(seen) == 1
    assert seen[0].startswith("predict-setup")
    batcher.close()


class BarrierModel:
    """Each batch waits inside predict until ``parties`` batches are in there at once (a model
    predicting elsewhere, on several replicas); counts the most it saw at once."""

    def __init__(self, parties: int, timeout_s: float) -> None:
        self.barrier = threading.Barrier(parties, timeout=timeout_s)
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.barrier.wait()  # BrokenBarrierError when the others never come
        finally:
            with self._lock:
                self.inside -= 1
        return {"double": x[:, 0] * 2}


async def test_a_parallel_batcher_runs_that_many_batches_at_once() -> None:
    model = BarrierModel(parties=2, timeout_s=WAIT_S)
    batcher = Batcher(model.predict, name="remote", max_batch_size=1, parallel=2)
    results = await asyncio.gather(*(batcher.submit(_row(v), ()) for v in (1, 2, 3, 4)))
    assert [float(r["double"][0]) for r in results] == [2.0, 4.0, 6.0, 8.0]
    assert model.most_inside == 2
    assert batcher.batches_inline == 0  # a remote model's batch never holds the event loop
    batcher.close()


async def test_a_batcher_of_one_never_runs_two_batches_at_once() -> None:
    """The control of the test above: the same model on a batcher of one breaks its barrier."""
    model = BarrierModel(parties=2, timeout_s=0.3)
    batcher = Batcher(model.predict, name="local", max_batch_size=1, inline_budget_s=0.0)
    results = await asyncio.gather(
        *(batcher.submit(_row(v), ()) for v in (1, 2)), return_exceptions=True
    )
    assert all(isinstance(result, PredictionFailed) for result in results), results
    assert model.most_inside == 1
    batcher.close()


async def test_a_parallel_batcher_counts_every_batch_and_stays_within_its_bound() -> None:
    lock = threading.Lock()
    inside = most_inside = 0
    predicted: list[int] = []

    def predict(x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
            predicted.append(len(x))
        time.sleep(0.005)
        with lock:
            inside -= 1
        return {"double": x[:, 0] * 2}

    counted: list[int] = []
    batcher = Batcher(predict, name="remote", max_batch_size=4, parallel=3)
    batcher.on_batch = counted.append
    sizes = [1 + (i % 3) for i in range(90)]
    results = await asyncio.gather(
        *(batcher.submit(_row(float(i), rows), ()) for i, rows in enumerate(sizes))
    )
    for i, (rows, result) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(result["double"], np.full(rows, 2.0 * i))
    assert sorted(counted) == sorted(predicted)  # every batch counted once, with its rows
    assert sum(counted) == sum(sizes)
    assert 1 < most_inside <= 3
    batcher.close()
