"""Adaptive batching that never waits on a timer while the model is idle.

An idle model runs a lone request at once. Requests that arrive while a batch is running queue up
and run together in the next batch (up to ``max_batch_size`` rows; ``max_delay_s`` optionally lets
a batch wait a little for more rows). If a batch raises, its requests are retried one by one so
only the bad request fails.

Where a batch runs: on the model's own thread, off the event loop — unless the model has shown that
its batches finish within ``inline_budget_s`` (a moving average of measured batch times). Handing a
batch to a thread and back costs two context switches (about 0.25 ms on the 2-core reference
machine, more than a small model's whole prediction), so such batches run on the event-loop thread,
which then yields before the next one. A model that slows down moves back to its thread, and an
inline batch that runs past ``OVERRUN_FACTOR`` times the budget is interrupted (``Overrun``, from
``reliability/overrun.py``) and run again on the model's thread, where the request's deadline holds:
one slow input cannot hold the event loop, and with it every other model and the health probes.

The model's thread pulls its batches itself: when one finishes, it takes whatever queued meanwhile
and starts on it at once, and only then do the answers go back to the event loop. Waiting for the
loop to hand over the next batch would leave the model idle while the loop encodes and sends the
last batch's responses.

With traces on (``monitoring.tracing``), each batch is a span linked to the spans of the requests
it serves, with the model's predict call a span inside it; a queued request carries its span's
context to the batch. With them off, a batch or a queued request costs an ``is None`` test or two.

The queue is bounded (``max_queue`` rows waiting): a request that would pass the bound is refused
at once with ``Overloaded`` (503 and ``Retry-After``) and never queued, so past saturation the
admitted requests keep their latency and the others learn in a millisecond to come back later. A
request whose deadline passed while it waited is answered 504 and never run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dockyard.errors import DockyardError, Overloaded, PredictionFailed, PredictionTimeout
from dockyard.monitoring import tracing
from dockyard.reliability.logs import QUOTES_REQUEST
from dockyard.reliability.overrun import Overrun, call_with_limit, can_interrupt
from dockyard.runtimes.base import row_count

logger = logging.getLogger(__name__)

QUIET_LEADS = 2
"""After this many leads in a row whose loop turn found no batch-mates, stop taking the turn."""
PROBE_EVERY = 8
"""While quiet, still take the turn on every PROBE_EVERY-th lead, to notice load."""
EWMA = 0.2
"""Weight of the newest batch in the moving average of batch durations."""
LOOP_COST_S = 100e-6
"""The event loop's own work per request (read, decode, encode, send): ~95 µs measured on the
2-core reference machine. Used to judge whether splitting the waiting requests pays."""
OVERRUN_FACTOR = 5.0
"""An inline batch is interrupted once it has run this many inline budgets (5 ms by default): far
above what a model whose batches average under the budget takes, short enough that the requests
waiting behind it on the loop do not notice."""
OVERRUN_LOG_EVERY_S = 60.0
"""Overruns are logged at most once a minute per model (with the count so far)."""
SHED_RETRY_AFTER_S = 1.0
"""What a shed request's ``Retry-After`` says: a full queue drains within a second for any model
served at a useful rate, and the header counts whole seconds."""
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
    span: Any = None
    """The request's span context, which its batch's span links to (traces on only)."""


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
        loop_cost_s: float = LOOP_COST_S,
        thread_setup: Callable[[], object] | None = None,
        max_queue: int = 0,
        parallel: int = 1,
    ) -> None:
        """``thread_setup`` runs first thing on the model's thread (per-thread state such as the
        OpenMP thread count, which a limit set on another thread does not reach); ``max_queue``:
        most rows waiting (0: no bound); ``parallel``: batches that may run at once, each on a
        model thread of its own (a model predicting elsewhere, on several replicas; such a
        batcher never runs a batch on the event loop)."""
        self._predict = predict
        self._name = name
        self._loop_cost_s = loop_cost_s
        self._inline_budget_s = inline_budget_s if parallel == 1 else 0.0
        self._inline_limit_s = OVERRUN_FACTOR * inline_budget_s if can_interrupt() else 0.0
        """How long an inline batch may run before it is interrupted; 0: it cannot be (built off
        the main thread, or SIGALRM belongs to something else, such as a test runner)."""
        self._batch_seconds: float | None = None
        """Moving average of measured batch durations; None until the first batch ran."""
        self._max_rows = max_batch_size if enabled else 1
        self._max_delay_s = max_delay_s if enabled else 0.0
        self._timeout_s = timeout_s
        self._queue: deque[_Pending] = deque()
        self._max_queue = max_queue
        self._waiting = 0
        """Rows in the queue (changed under the lock, read without it: a bound, not a count)."""
        self.shed = 0
        """Requests refused because the queue was full (counted for tests)."""
        self._lock = threading.Lock()
        """Guards the queue's hand-over between the event loop and the model's thread."""
        self._arrived = threading.Condition(self._lock)
        self._parallel = parallel
        self._owners = 0
        """How many of a leader, the inline drainer and the model's threads own the queue now
        (at most ``parallel``; one for a batcher that runs a batch at a time)."""
        self._outstanding = 0
        """Rows submitted and not yet answered: the concurrency the batches are cut from."""
        self._drainer: asyncio.Task[None] | None = None
        self._quiet_leads = 0
        self.turns_skipped = 0
        """Leads that ran at once, without the loop turn (a lone client; counted for tests)."""
        self._executor = ThreadPoolExecutor(
            max_workers=parallel, thread_name_prefix=f"predict-{name}", initializer=thread_setup
        )
        self.batches_run = 0
        """Number of batches handed to the model; tests count these instead of timing."""
        self.batches_inline = 0
        """How many of them ran on the event-loop thread."""
        self.overruns = 0
        """Inline batches interrupted past the limit and moved to the model's thread."""
        self._overrun_logged = -OVERRUN_LOG_EVERY_S
        self.on_batch: Callable[[int], object] | None = None
        """Called with each batch's row count (the worker's metrics), on the thread that ran it,
        once it ran (a batch interrupted on the event loop and run again counts once); under the
        lock when batches may run at once."""

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Rows submitted and not yet answered (a lone request predicted at once never counts:
        it is answered before the event loop does anything else)."""
        return self._outstanding

    async def submit(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Predict ``x`` (one request's rows); raise PredictionTimeout past the deadline.

        The first request to reach an idle batcher leads: for a model that runs inline it yields
        one loop turn (so requests that arrived with it join its batch) and runs that batch
        itself, with no task or thread hand-off; otherwise it wakes the model's thread. While
        recent turns found no batch-mates (a lone client), it skips the turn and the queue too.
        """
        if not self._owners and self._lone():
            alone = self._alone(x, outputs)
            if alone is not None:
                return alone
        rows = row_count(x)
        waiting = self._waiting
        if waiting and waiting + rows > self._max_queue > 0:
            raise self._shed(waiting)
        loop = asyncio.get_running_loop()
        pending = _Pending(x, rows, outputs, loop.create_future())
        if tracing.ACTIVE is not None:
            pending.span = tracing.ACTIVE.current()
        with self._lock:
            self._queue.append(pending)
            self._waiting += rows
            idle = self._owners < self._parallel
            if idle:
                self._owners += 1
            if self._max_delay_s:
                self._arrived.notify()
        self._outstanding += pending.rows
        try:
            if idle:
                if self._runs_inline() and not self._max_delay_s:
                    await self._lead()
                else:  # after this loop turn, so requests that arrived with this one join it
                    loop.call_soon(self._executor.submit, self._work, loop)
            if pending.future.done():
                return pending.future.result()
            expiry = loop.call_later(self._timeout_s, self._expire, pending)
            try:
                return await pending.future
            finally:
                expiry.cancel()
        finally:
            self._outstanding -= pending.rows

    def _shed(self, waiting: int) -> Overloaded:
        """The refusal of a request that would pass the queue's bound (it is never queued)."""
        self.shed += 1
        return Overloaded(
            f"model {self._name} is overloaded: {waiting} rows are waiting (max_queue "
            f"{self._max_queue}); retry later",
            retry_after=SHED_RETRY_AFTER_S,
        )

    async def _lead(self) -> None:
        """Run the batch this request opens, after one loop turn in which requests that arrived
        with it join the queue."""
        try:
            await asyncio.sleep(0)
            with self._lock:
                batch = self._take()
            self._quiet_leads = self._quiet_leads + 1 if len(batch) == 1 else 0
            self._run_inline(batch)
        finally:
            self._hand_over(asyncio.get_running_loop())

    def _lone(self) -> bool:
        """Whether a request reaching the idle batcher runs alone at once: the model runs inline,
        no delay is asked for, and recent loop turns found no batch-mates. Every PROBE_EVERY-th
        such request still takes the turn, so a burst is noticed within a few requests."""
        quiet = self._quiet_leads
        return (
            quiet >= QUIET_LEADS
            and quiet % PROBE_EVERY != 0
            and not self._max_delay_s
            and self._runs_inline()
        )

    def _alone(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """Predict a lone client's request now, on the loop thread. Nothing is queued or running
        and nothing can arrive before it returns, so it needs no future, queue or lock (~9 µs a
        request saved, measured in process; benchmarks/ANALYSIS.md). None when it overran: the
        caller queues it for the model's thread."""
        self._quiet_leads += 1
        self.turns_skipped += 1
        self.batches_inline += 1
        rows = row_count(x)
        try:
            (result,) = call_with_limit(
                self._inline_limit_s, self._predict_batch, [(x, rows)], outputs
            )
        except Overrun:
            self._overran(1)
            return None
        except DockyardError:
            self._count([rows])
            raise
        except Exception as exc:
            self._count([rows])
            raise _model_failure(exc) from None
        self._count([rows])
        return _selected(result, outputs)

    async def _drain_inline(self) -> None:
        """Run what queued behind a leader, batch by batch, yielding between batches."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0)  # the last batch did not yield: let the loop read requests
            with self._lock:
                if not self._queue or not self._runs_inline():
                    break
                batch = self._take()
            self._run_inline(batch)
        self._hand_over(loop)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """After inline batches: stop, go on inline, or wake the model's thread (it slowed)."""
        with self._lock:
            if not self._queue:
                self._owners -= 1
                return
        if self._runs_inline():
            self._drainer = loop.create_task(self._drain_inline())
        else:
            self._executor.submit(self._work, loop)

    def _run_inline(self, batch: list[_Pending]) -> None:
        """Run a batch on the loop thread; past the limit, put it back for the model's thread."""
        self.batches_inline += 1
        ran: list[int] = []
        try:
            outcomes = call_with_limit(self._inline_limit_s, self._execute, batch, ran)
        except Overrun:  # nothing counted: the model's thread runs the batch again
            self._overran(len(batch))
            with self._lock:
                self._queue.extendleft(reversed(batch))
                self._waiting += sum(p.rows for p in batch)
            return
        self._count(ran)
        _settle(outcomes)

    def _overran(self, requests: int) -> None:
        """An inline batch was interrupted: from now on the model runs on its own thread, until
        its measured batches prove it fast again."""
        self.overruns += 1
        self._batch_seconds = max(self._batch_seconds or 0.0, self._inline_limit_s)
        now = time.monotonic()
        if now - self._overrun_logged < OVERRUN_LOG_EVERY_S:
            return  # a machine short of CPU deschedules the loop past the limit now and then
        self._overrun_logged = now
        logger.warning(
            "%s: a batch of %d requests ran past %g ms on the event loop; it runs again on the "
            "model's thread (%d such batches so far)",
            self._name,
            requests,
            self._inline_limit_s * 1000,
            self.overruns,
        )

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """The model's thread: take what queued as a batch, predict, and go on until the queue is
        empty. Each batch's answers go to the event loop only once the next batch is taken, so
        the queue is never left without an owner (and the loop sees an idle batcher once its last
        answers arrive)."""
        outcomes: list[tuple[_Pending, Outcome]] = []
        while True:
            with self._lock:
                if self._queue:
                    batch = self._take(most=self._pipelined_rows())
                else:
                    batch = []
                    self._owners -= 1
            if outcomes:
                loop.call_soon_threadsafe(_settle, outcomes)
            if not batch:
                return
            if self._max_delay_s:
                with self._lock:
                    self._wait_for_more(batch)
            ran: list[int] = []
            outcomes = self._execute(batch, ran)
            self._count(ran)

    def _count(self, ran: list[int]) -> None:
        """Report the row counts of the batches that ran (``on_batch``)."""
        on_batch = self.on_batch
        if on_batch is None:
            return
        if self._parallel > 1:
            with self._lock:
                for rows in ran:
                    on_batch(rows)
        else:
            for rows in ran:
                on_batch(rows)

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

    def _pipelined_rows(self) -> int:
        """The most rows the model's thread takes now.

        While the model works on a batch, the event loop answers the previous one and reads new
        requests. A batch that took every outstanding request would leave the loop idle while the
        model runs, then the model idle while the loop answers. So where the loop's share
        (``loop_cost_s`` per outstanding row) outweighs a batch's run time, a batch takes at most
        half the outstanding rows, and two halves alternate between the model and the loop.
        """
        outstanding = self._outstanding
        seconds = self._batch_seconds
        if seconds is not None and seconds < outstanding * self._loop_cost_s:
            return min(self._max_rows, (outstanding + 1) // 2)
        return self._max_rows

    def _take(self, rows: int = 0, most: int = 0) -> list[_Pending]:
        """Queued requests that fit the row limit (``most``, default max_batch_size) on top of
        ``rows`` already in the batch; the caller holds the lock.

        A new batch (``rows == 0``) always takes its first request, so oversized requests still run.
        """
        most = most or self._max_rows
        taken: list[_Pending] = []
        start = rows
        while self._queue and ((rows == 0 and not taken) or rows + self._queue[0].rows <= most):
            rows += self._queue[0].rows
            taken.append(self._queue.popleft())
        self._waiting -= rows - start
        return taken

    def _wait_for_more(self, batch: list[_Pending]) -> None:
        """Hold the batch open until it is full or its first request is max_delay_s old (the
        caller holds the lock; waiting releases it, so the loop can queue more)."""
        deadline = batch[0].enqueued + self._max_delay_s
        rows = sum(p.rows for p in batch)
        while rows < self._max_rows and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.wait(remaining)
            more = self._take(rows)
            batch.extend(more)
            rows += sum(p.rows for p in more)

    def _execute(self, batch: list[_Pending], ran: list[int]) -> list[tuple[_Pending, Outcome]]:
        """Predict a batch; if it raises, predict its requests one by one, so only the request at
        fault fails. Each request is paired with its result or its exception. Requests already
        answered (past their deadline while they waited) are left out, never run. Each batch
        handed to the model adds its row count to ``ran``, for the caller to report once the
        whole call is through (``_count``)."""
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return []
        parts = [(p.x, p.rows) for p in batch]
        outputs = tuple(dict.fromkeys(name for p in batch for name in p.outputs))
        if any(not p.outputs for p in batch):
            outputs = ()
        ran.append(sum(rows for _, rows in parts))
        try:
            return list(zip(batch, self._predict_batch(parts, outputs, batch), strict=True))
        except Exception as exc:
            if len(batch) == 1:
                return [(batch[0], exc)]
        logger.info("batch of %d requests failed; retrying them one by one", len(batch))
        return [outcome for pending in batch for outcome in self._execute([pending], ran)]

    def _predict_batch(
        self,
        parts: list[tuple[Any, int]],
        outputs: tuple[str, ...],
        requests: list[_Pending] | None = None,
        in_span: bool = False,
    ) -> list[dict[str, np.ndarray]]:
        """Stack the inputs, predict once, split by row offsets; time the model for next time.

        With traces on, this runs again inside the batch's span (``in_span``), linked to the
        spans of ``requests`` (None: the lone request being served on the loop thread now); with
        them off, it runs once, without an extra call."""
        traces = tracing.ACTIVE
        if traces is not None and not in_span:
            spans = None if requests is None else [pending.span for pending in requests]
            with traces.batch(spans, sum(rows for _, rows in parts)):
                return self._predict_batch(parts, outputs, requests, True)
        self.batches_run += 1
        x = parts[0][0] if len(parts) == 1 else concat_inputs([part for part, _ in parts])
        total = sum(rows for _, rows in parts)
        started = time.perf_counter()
        if traces is None:
            result = self._predict(x, outputs)
        else:
            result = traces.predict(self._predict, x, outputs)
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


Outcome = dict[str, np.ndarray] | Exception
"""What one request's prediction came to: its outputs or the exception that stopped it."""


def _settle(outcomes: list[tuple[_Pending, Outcome]]) -> None:
    """Answer each request on the event loop (one past its deadline was answered already)."""
    for pending, outcome in outcomes:
        if pending.future.done():
            continue
        if isinstance(outcome, DockyardError):
            pending.future.set_exception(outcome)
        elif isinstance(outcome, Exception):
            pending.future.set_exception(_model_failure(outcome))
        else:
            pending.future.set_result(_selected(outcome, pending.outputs))


def _selected(result: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The outputs a request asked for (all when none) out of its batch's."""
    return {name: result[name] for name in outputs or result}


def _model_failure(exc: Exception) -> PredictionFailed:
    """What a client sees of the model's own exception, which is logged, not sent."""
    logger.exception("prediction failed", exc_info=exc, extra=QUOTES_REQUEST)
    return PredictionFailed(f"model failed to predict: {type(exc).__name__}")
