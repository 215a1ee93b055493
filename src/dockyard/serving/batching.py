"""Adaptive batching that never waits on a timer while the model is idle.

An idle model runs a lone request at once. Requests that arrive while a batch is running queue up
and run together in the next batch (up to ``max_batch_size`` rows; ``max_delay_s`` optionally lets
a batch wait a little for more rows). If a batch raises, its requests are retried one by one so
only the bad request fails.

Where a batch runs: on the model's own thread, off the event loop — unless the model has shown that
its batches finish within ``inline_budget_s`` (a moving average of measured batch times). Handing a
batch to a thread and back costs two context switches (about 0.25 ms on the 2-core reference
machine, more than a small model's whole prediction), so such batches run on the event-loop thread,
which then yields before the next one. A model that slows down moves back to its thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dockyard.errors import DockyardError, PredictionFailed, PredictionTimeout
from dockyard.runtimes.base import row_count

logger = logging.getLogger(__name__)

QUIET_LEADS = 2
"""After this many leads in a row whose loop turn found no batch-mates, stop taking the turn."""
PROBE_EVERY = 8
"""While quiet, still take the turn on every PROBE_EVERY-th lead, to notice load."""
EWMA = 0.2
"""Weight of the newest batch in the moving average of batch durations."""
PredictFn = Callable[[Any, tuple[str, ...]], dict[str, np.ndarray]]


def concat_inputs(parts: Sequence[Any]) -> Any:
    """Stack model inputs row-wise; ValueError when they cannot be (different trailing shapes)."""
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(first, Mapping):
        return {name: np.concatenate([part[name] for part in parts], axis=0) for name in first}
    import pandas as pd  # only tables with categorical columns arrive as DataFrames

    return pd.concat(parts, ignore_index=True)


@dataclass(eq=False)
class _Pending:
    x: Any
    rows: int
    outputs: tuple[str, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs one model's predictions, batching requests that arrive while it is busy."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        name: str,
        max_batch_size: int = 64,
        max_delay_s: float = 0.0,
        timeout_s: float = 30.0,
        enabled: bool = True,
        inline_budget_s: float = 0.001,
    ) -> None:
        self._predict = predict
        self._inline_budget_s = inline_budget_s
        self._batch_seconds: float | None = None
        """Moving average of measured batch durations; None until the first batch ran."""
        self._max_rows = max_batch_size if enabled else 1
        self._max_delay_s = max_delay_s if enabled else 0.0
        self._timeout_s = timeout_s
        self._queue: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._draining = False
        self._quiet_leads = 0
        self.turns_skipped = 0
        """Leads that ran at once, without the loop turn (a lone client; counted for tests)."""
        """True while a leader or the drainer task is running batches; the queue is theirs."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self.batches_run = 0
        """Number of batches handed to the model; tests count these instead of timing."""
        self.batches_inline = 0
        """How many of them ran on the event-loop thread."""

    async def submit(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Predict ``x`` (one request's rows); raise PredictionTimeout past the deadline.

        The first request to reach an idle batcher leads: for a model that runs inline it yields
        one loop turn (so requests that arrived with it join its batch) and runs that batch
        itself, with no task or thread hand-off; anything left queued goes to a drainer task.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(x, row_count(x), outputs, loop.create_future())
        self._queue.append(pending)
        if self._arrived is not None:
            self._arrived.set()
        if not self._draining:
            self._draining = True
            if self._runs_inline() and not self._max_delay_s:
                await self._lead()
            else:
                self._drainer = loop.create_task(self._drain())
        if pending.future.done():
            return pending.future.result()
        expiry = loop.call_later(self._timeout_s, self._expire, pending)
        try:
            return await pending.future
        finally:
            expiry.cancel()

    async def _lead(self) -> None:
        """Run the batch this request opens. The loop turn that gathers batch-mates is skipped
        while recent turns found none (a lone client), except every PROBE_EVERY-th lead, so a
        burst is noticed within a few requests and batching resumes."""
        try:
            probe = self._quiet_leads < QUIET_LEADS or self._quiet_leads % PROBE_EVERY == 0
            if probe:
                await asyncio.sleep(0)
            else:
                self.turns_skipped += 1
            batch = self._take()
            self._quiet_leads = self._quiet_leads + 1 if len(batch) == 1 or not probe else 0
            await self._run(batch)
        finally:
            if self._queue:
                self._drainer = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._draining = False

    def _runs_inline(self) -> bool:
        """Whether batches run on the event-loop thread: the model has proved fast enough."""
        return self._batch_seconds is not None and self._batch_seconds <= self._inline_budget_s

    def _expire(self, pending: _Pending) -> None:
        """Past the deadline: fail the request now; a batch still running it drops its result."""
        if not pending.future.done():
            pending.future.set_exception(
                PredictionTimeout(f"prediction did not finish within {self._timeout_s:g} s")
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if self._max_delay_s and sum(p.rows for p in batch) < self._max_rows:
                    await self._wait_for_more(batch)
                batch = [p for p in batch if not p.future.done()]
                if batch:
                    await self._run(batch)
                await asyncio.sleep(0)  # an inline batch did not yield: let the loop read requests
        finally:
            self._draining = False

    def _take(self, rows: int = 0) -> list[_Pending]:
        """Queued requests that fit the row limit on top of ``rows`` already in the batch.

        A new batch (``rows == 0``) always takes its first request, so oversized requests still run.
        """
        taken: list[_Pending] = []
        while self._queue and (
            (rows == 0 and not taken) or rows + self._queue[0].rows <= self._max_rows
        ):
            rows += self._queue[0].rows
            taken.append(self._queue.popleft())
        return taken

    async def _wait_for_more(self, batch: list[_Pending]) -> None:
        deadline = batch[0].enqueued + self._max_delay_s
        self._arrived = asyncio.Event()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                batch.extend(self._take(sum(p.rows for p in batch)))
                if sum(p.rows for p in batch) >= self._max_rows:
                    break
        finally:
            self._arrived = None

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        outputs = tuple(dict.fromkeys(name for p in batch for name in p.outputs))
        if any(not p.outputs for p in batch):
            outputs = ()
        inline = self._runs_inline()
        parts = [(p.x, p.rows) for p in batch]
        try:
            if inline:
                self.batches_inline += 1
                results = self._predict_batch(parts, outputs)
            else:
                results = await loop.run_in_executor(
                    self._executor, self._predict_batch, parts, outputs
                )
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            logger.info("batch of %d requests failed; retrying them one by one", len(batch))
            for pending in batch:
                await self._run([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                wanted = pending.outputs or tuple(result)
                pending.future.set_result({name: result[name] for name in wanted})

    def _predict_batch(
        self, parts: list[tuple[Any, int]], outputs: tuple[str, ...]
    ) -> list[dict[str, np.ndarray]]:
        """Stack the inputs, predict once, split by row offsets; time the model for next time."""
        self.batches_run += 1
        x = parts[0][0] if len(parts) == 1 else concat_inputs([part for part, _ in parts])
        total = sum(rows for _, rows in parts)
        started = time.perf_counter()
        result = self._predict(x, outputs)
        elapsed = time.perf_counter() - started
        previous = self._batch_seconds
        self._batch_seconds = (
            elapsed if previous is None else previous + EWMA * (elapsed - previous)
        )
        for name, values in result.items():
            if len(values) != total:
                raise PredictionFailed(
                    f"model returned {len(values)} rows of {name!r} for {total} input rows"
                )
        if len(parts) == 1:
            return [result]
        split: list[dict[str, np.ndarray]] = []
        start = 0
        for _, rows in parts:
            stop = start + rows
            split.append({name: values[start:stop] for name, values in result.items()})
            start = stop
        return split


def _fail(pending: _Pending, exc: Exception) -> None:
    """Fail one request; the model's own exception is logged, not sent."""
    if pending.future.done():
        return
    if isinstance(exc, DockyardError):
        pending.future.set_exception(exc)
        return
    logger.exception("prediction failed", exc_info=exc)
    pending.future.set_exception(PredictionFailed(f"model failed to predict: {type(exc).__name__}"))
