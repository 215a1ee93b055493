"""One worker's request metrics: counted in plain dicts on the hot path, shared through files.

A request costs a set lookup, a dict lookup and three list updates (about a microsecond); nothing
else happens on the hot path. About once a second, off the event loop, the worker writes what it
has counted since it started to its own file in the server's metrics folder
(``home/tmp/<server>-metrics``, one ``<pid>-<start>.json`` per worker, replaced atomically). The
worker that answers a scrape writes its own file first, then adds up every file in the folder, so
the sums cover all workers and never go down: a worker that died leaves its last file (losing at
most one interval of counts) and the one started in its place writes a new file. Gauges (queue
depth, rows in flight) count only the workers still alive.

The Prometheus exposition (``monitoring.exposition``, prometheus-client) is imported at the first
scrape, not at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from dockyard.home import DIR_MODE, Home, process_is_alive
from dockyard.registry.records import ModelVersion

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dockyard.monitoring.exposition import Scrape

logger = logging.getLogger(__name__)

FLUSH_S = 1.0
"""How often a worker writes its counts for the others: the most a killed worker loses."""
LATENCY_BOUNDS_S = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds of the latency histogram's buckets (and +Inf): a small model answers in ~0.3 ms."""
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch-size histogram's buckets, in rows (and +Inf)."""
UNSERVED = "(not served)"
"""The model label of requests for a name this server does not serve: the path is the client's
to choose, and each distinct label value would be a new series kept for good."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format, as ``prometheus_client.generate_latest`` writes it."""
LOG_WRITTEN, LOG_SHED, LOG_WRITER_SECONDS = "written", "shed", "writer_seconds"
"""The keys of ``Snapshot.log``; the first two are also the ``outcome`` label of
``dockyard_prediction_log_rows_total``."""
SUFFIX = ".json"
T = TypeVar("T")

RequestKey = tuple[str, int | None, str, int]
"""model, version (None: no version answered), route (``v2``, ``v1``, ``grpc``), HTTP status."""
VersionKey = tuple[str, int]
"""model, version."""
ShadowKey = tuple[str, int, str]
"""model, candidate version, outcome of a mirrored request (one of ``SHADOW_OUTCOMES``)."""
AGREE, DISAGREE, FAILED = SHADOW_OUTCOMES = ("agree", "disagree", "failed")
Stats = list[float]
"""A histogram: ``[observations, their sum, observations per bucket…]`` (the last bucket +Inf)."""


class LogCounts(Protocol):
    """What the metrics read of the worker's prediction log (``monitoring.predlog``)."""

    written_rows: int
    writer_seconds: float

    @property
    def shed_rows(self) -> int: ...

    @property
    def pending_rows(self) -> int: ...


class BatchQueue(Protocol):
    """What the metrics read of a served version's batcher (``serving.batching.Batcher``)."""

    on_batch: Callable[[int], object] | None

    @property
    def queue_depth(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


@dataclass(frozen=True)
class Served:
    """A version this worker serves, with how long its artifact took to load."""

    version: ModelVersion
    load_seconds: float


def metrics_folder(home: Home, server: str) -> Path:
    """Where the workers of server ``server`` (``reliability.supervisor.server_token``) write their
    counts: named after the serving process, so the home's sweep removes it once that is gone."""
    return home.tmp / f"{server}-metrics"


def _histogram(bounds: tuple[float, ...]) -> Stats:
    return [0, 0.0] + [0] * (len(bounds) + 1)


def _add(into: Stats, other: Stats) -> None:
    for index, value in enumerate(other):
        into[index] += value


@dataclass
class Snapshot:
    """Counts of one worker, or summed over a server's workers."""

    requests: dict[RequestKey, Stats] = field(default_factory=dict)
    """Requests and their latency histogram (``LATENCY_BOUNDS_S``), in seconds."""
    batches: dict[VersionKey, Stats] = field(default_factory=dict)
    """Batches and their size histogram (``BATCH_BOUNDS``), in rows."""
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    """(model, error class) → requests answered with that error."""
    security: dict[str, int] = field(default_factory=dict)
    """Security event kind → events."""
    gauges: dict[VersionKey, tuple[int, int]] = field(default_factory=dict)
    """(model, version) → (requests waiting for a batch, rows in flight), when last written."""
    shadow: dict[ShadowKey, Stats] = field(default_factory=dict)
    """Requests mirrored to a shadow candidate by outcome, and its latency histogram."""
    log: dict[str, float] = field(default_factory=dict)
    """The prediction log's rows written and shed, and its writer's CPU seconds (keys
    ``LOG_WRITTEN``, ``LOG_SHED``, ``LOG_WRITER_SECONDS``; empty with the log off)."""
    log_pending: int = 0
    """Rows the prediction log holds and has not written, when last written."""

    def copy(self) -> Snapshot:
        """A copy safe to read on another thread while this one goes on counting."""
        return Snapshot(
            {key: list(stats) for key, stats in self.requests.items()},
            {key: list(stats) for key, stats in self.batches.items()},
            dict(self.errors),
            dict(self.security),
            dict(self.gauges),
            {key: list(stats) for key, stats in self.shadow.items()},
            dict(self.log),
            self.log_pending,
        )

    def add(self, other: Snapshot, *, gauges: bool) -> None:
        """Add ``other``'s counts (and its gauges, when its worker is alive) to these."""
        for key, stats in other.requests.items():
            _add(self.requests.setdefault(key, [0] * len(stats)), stats)
        for version, stats in other.batches.items():
            _add(self.batches.setdefault(version, [0] * len(stats)), stats)
        for shadow, stats in other.shadow.items():
            _add(self.shadow.setdefault(shadow, [0] * len(stats)), stats)
        for error, count in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count
        for kind, count in other.security.items():
            self.security[kind] = self.security.get(kind, 0) + count
        for name, value in other.log.items():
            self.log[name] = self.log.get(name, 0) + value
        if gauges:
            self.log_pending += other.log_pending
            for version, (queued, in_flight) in other.gauges.items():
                was_queued, was_in_flight = self.gauges.get(version, (0, 0))
                self.gauges[version] = (was_queued + queued, was_in_flight + in_flight)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "requests": [[*key, stats] for key, stats in self.requests.items()],
                "batches": [[*key, stats] for key, stats in self.batches.items()],
                "errors": [[*key, count] for key, count in self.errors.items()],
                "security": [[kind, count] for kind, count in self.security.items()],
                "gauges": [[*key, *values] for key, values in self.gauges.items()],
                "shadow": [[*key, stats] for key, stats in self.shadow.items()],
                "log": self.log,
                "log_pending": self.log_pending,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        """Read what ``to_bytes`` wrote; ValueError when it is not that."""
        try:
            raw: dict[str, Any] = orjson.loads(data)
            return cls(
                {(m, v, r, s): stats for m, v, r, s, stats in raw["requests"]},
                {(m, v): stats for m, v, stats in raw["batches"]},
                {(m, kind): count for m, kind, count in raw["errors"]},
                {kind: count for kind, count in raw["security"]},
                {(m, v): (queued, flying) for m, v, queued, flying in raw["gauges"]},
                {(m, v, outcome): stats for m, v, outcome, stats in raw.get("shadow", [])},
                dict(raw.get("log", {})),
                int(raw.get("log_pending", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a metrics snapshot: {exc}") from exc


def read_totals(folder: Path, skip: str = "") -> Snapshot:
    """The counts of every worker that wrote to ``folder`` (but the file named ``skip``), summed;
    gauges of live ones only."""
    totals = Snapshot()
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if path.name == skip:
            continue
        try:
            snapshot = Snapshot.from_bytes(path.read_bytes())
        except (OSError, ValueError) as exc:
            logger.warning("skipping metrics file %s: %s", path.name, exc)
            continue
        pid = path.name.partition("-")[0]
        totals.add(snapshot, gauges=pid.isdigit() and process_is_alive(int(pid)))
    return totals


class WorkerMetrics:
    """This worker's counts: recorded by the hot path, the batchers and the security event log;
    written to the server's metrics folder every ``FLUSH_S``; summed over the workers for
    ``/metrics`` (``exposition``) and for the alert rules (``totals``)."""

    def __init__(self, folder: Path, engine: Engine | None = None) -> None:
        """``engine``: the registry's, for the gauges read from its tables (drift, live
        evaluations); None shows none of them."""
        self.folder = folder
        self._engine = engine
        self._file = folder / f"{os.getpid()}-{time.time_ns():x}{SUFFIX}"
        self._live = Snapshot()
        self._models: set[str] = set()
        self._queues: dict[VersionKey, BatchQueue] = {}
        self._log: LogCounts | None = None
        self.served: list[Served] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        """Writes and scrapes, one at a time and in the order they were asked for: a file is
        never replaced by an older snapshot."""
        self._flusher: asyncio.Task[None] | None = None
        self._written = b""
        self._failing = False
        self._scrape: Scrape | None = None

    def watch(self, served: Served, queue: BatchQueue) -> None:
        """Count requests for ``served`` under its name, and its batches; read its queue's
        gauges at each write. Call before serving."""
        version = served.version
        key = (version.model, version.version)
        self._models.add(version.model)
        self._queues[key] = queue
        self.served.append(served)
        stats = self._live.batches.setdefault(key, _histogram(BATCH_BOUNDS))

        def batch(rows: int) -> None:
            stats[0] += 1
            stats[1] += rows
            stats[2 + bisect_left(BATCH_BOUNDS, rows)] += 1

        queue.on_batch = batch

    def watch_log(self, log: LogCounts) -> None:
        """Show the prediction log's rows written and shed, its writer's CPU seconds and the
        rows it holds, read at each write."""
        self._log = log

    def request(
        self,
        route: str,
        model: str,
        version: int | None,
        status: int,
        seconds: float,
        error: str | None,
    ) -> None:
        """One inference request answered (on the event loop)."""
        if model not in self._models:
            model = UNSERVED
        key = (model, version, route, status)
        requests = self._live.requests
        stats = requests.get(key)
        if stats is None:
            stats = requests[key] = _histogram(LATENCY_BOUNDS_S)
        stats[0] += 1
        stats[1] += seconds
        stats[2 + bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
        if error is not None:
            errors = self._live.errors
            errors[model, error] = errors.get((model, error), 0) + 1

    def shadow(self, model: str, version: int, outcome: str, seconds: float) -> None:
        """One request mirrored to a shadow candidate (``serving.rollout_routing``), on the event
        loop: its outcome and the candidate's latency."""
        key = (model, version, outcome)
        stats = self._live.shadow.get(key)
        if stats is None:
            stats = self._live.shadow[key] = _histogram(LATENCY_BOUNDS_S)
        stats[0] += 1
        stats[1] += seconds
        stats[2 + bisect_left(LATENCY_BOUNDS_S, seconds)] += 1

    def security_event(self, kind: str) -> None:
        """A security event was recorded (``security.events.EventLog.listener``)."""
        security = self._live.security
        security[kind] = security.get(kind, 0) + 1

    def snapshot(self) -> Snapshot:
        """This worker's counts and gauges now (call on the event loop)."""
        snapshot = self._live.copy()
        snapshot.gauges = {
            key: (queue.queue_depth, queue.in_flight) for key, queue in self._queues.items()
        }
        log = self._log
        if log is not None:
            snapshot.log = {
                LOG_WRITTEN: log.written_rows,
                LOG_SHED: log.shed_rows,
                LOG_WRITER_SECONDS: log.writer_seconds,
            }
            snapshot.log_pending = log.pending_rows
        return snapshot

    async def start(self) -> None:
        self.folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._flusher = asyncio.create_task(self._flushing())

    async def close(self) -> None:
        """Stop writing every second and write the last counts: a graceful stop loses none."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self._in_executor(self._write, self.snapshot())
        finally:
            self._executor.shutdown(wait=False)

    async def totals(self) -> Snapshot:
        """Every worker's counts summed (this one's as of now)."""
        return await self._in_executor(self._totals, self.snapshot())

    async def exposition(self) -> bytes:
        """``/metrics``: the Prometheus text format of the summed counts and the gauges."""
        return await self._in_executor(self._expose, self.snapshot())

    async def _flushing(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._in_executor(self._write, self.snapshot())

    async def _in_executor(self, work: Callable[[Snapshot], T], snapshot: Snapshot) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, snapshot)

    def _write(self, snapshot: Snapshot) -> None:
        """Replace this worker's file with ``snapshot`` (unless unchanged); a failure is logged,
        once until writing works again, and tried again next time."""
        data = snapshot.to_bytes()
        if data == self._written:
            return
        temp = self._file.with_name(f".{self._file.name}.tmp")
        try:
            temp.write_bytes(data)
            os.replace(temp, self._file)
        except OSError as exc:
            if not self._failing:
                logger.warning("cannot write metrics to %s: %s", self.folder, exc.strerror)
            self._failing = True
            return
        self._written = data
        self._failing = False

    def _totals(self, snapshot: Snapshot) -> Snapshot:
        """Every worker's counts, this one's from ``snapshot``, which its file gets first: a
        scrape answered by another worker later sees at least as much."""
        self._write(snapshot)
        totals = read_totals(self.folder, skip=self._file.name)
        totals.add(snapshot, gauges=True)
        return totals

    def _expose(self, snapshot: Snapshot) -> bytes:
        if self._scrape is None:
            from dockyard.monitoring.exposition import Scrape  # prometheus-client, at first use

            self._scrape = Scrape(self.served, self._engine)
        return self._scrape.render(self._totals(snapshot))
