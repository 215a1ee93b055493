"""One worker's prediction log (``PredictionLog``): a queue on the hot path, and off it a thread
that turns the queued requests into rows, writes them as segments, sheds what does not fit, and
compacts what it wrote. In a serving worker (``for_worker``) that work is done by the worker's
writer process (``process.WriterProcess``, forked at ``start``): the thread only ships it the
queue, and takes the work back should the process die.

The hot path gathers the requests it is handed (``append``), and every ``GATHER_REQUESTS``
requests copies each request of numbers into the open block of columns of its version, day and
layout (``columns.Block``), queueing the block once it is full or a request of another kind
follows; any other request it queues by reference to its arrays. The arrays a request is logged
with are never changed afterwards (the server hands the log arrays it built for that request, or
slices of a batch's outputs), so holding them until they are copied changes nothing written.
A thread builds the queue into Arrow rows every ``BUILD_EVERY_S``, a whole slice of
``SLICE_REQUESTS`` requests at a time, holding them per model version and day, and every
``log_flush_s`` copies what is gathered, queues the open block, builds the rest and writes what
it holds as segments. Past ``log_queue_rows`` rows waiting (gathered, copied, queued, held or
being written), new rows are shed and counted (``shed_rows``) rather than held. The writer
passes each segment's rows through ``protect`` first (the personal-data rules of governance:
columns dropped, masked, hashed or generalized), so what a request held reaches the disk only as
those rules allow. A segment holds its version's rows in the order they
were answered, except that requests queued by reference are grouped by layout within a slice.

Why copied, and why rows are built more often than written: a queued request keeps its Python
objects alive (dicts, arrays, its id: about a kilobyte) until the writer builds it, and the
writer freeing them cost a worker about 3.5 µs a request. Copied, the loop frees the request
itself, and the writer builds a block at about half the CPU a request (4.3 against 8.5 µs in a
worker at 64 connections: ``benchmarks/ANALYSIS.md``). What is still queued by reference is
built as it fills a slice, so at most a slice and a tenth of a second of requests are held; the
built rows are a few hundred bytes of Arrow buffers each, and a segment per second keeps the
files few.

The writer builds ``SLICE_REQUESTS`` requests at a time and, after each slice, sleeps for the CPU
time the slice took (unless the queue is half full: then it catches up first). Under uvloop the
event loop gives the GIL up around every callback and waits for it back, so a thread that keeps
the GIL busy starves the loop: building a second of traffic at 64 connections in one go (about
5,000 requests: 20-50 ms of building tables and freeing requests, as each flush once did) stalled
it that long, seen as loop lags of 20-60 ms and a doubled p99. Sliced, the loop waits at most one
slice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa

from dockyard.config import Settings
from dockyard.encryption import Cipher
from dockyard.home import Home
from dockyard.monitoring.predlog.columns import Block
from dockyard.monitoring.predlog.compaction import COMPACT_AGE_S, compact_folder
from dockyard.monitoring.predlog.layout import (
    BASE_SCHEMA,
    DAY_S,
    PREDICTIONS,
    day_name,
    log_cipher,
)
from dockyard.monitoring.predlog.process import ChildGone, Counts, WriterProcess
from dockyard.monitoring.predlog.storage import concat, write_segment
from dockyard.monitoring.predlog.tables import Entry, segment_table
from dockyard.registry.records import ModelVersion

logger = logging.getLogger(__name__)

ERROR_LOG_EVERY_S = 60.0
"""A writer that keeps failing (a full disk) logs the failure at most this often."""
COMPACT_EVERY_S = 60.0
"""How often a worker's writer thread compacts (after a flush)."""
BUILD_EVERY_S = 0.1
"""How often the writer thread builds the whole slices queued into rows (``log_flush_s`` when
that is shorter)."""
SLICE_REQUESTS = 1024
"""Queued requests the writer turns into a table before it pauses (a few milliseconds of work
for one-row requests, about the interpreter's 5 ms switch interval): the longest the event loop
waits for the GIL because of a flush."""

GATHER_REQUESTS = 64
"""Requests ``append`` gathers before copying them into blocks, in one go on the event loop. Done
as each request is answered, between the server's other work, the copy and its checks cost the
loop about three times what they take in a tight loop; gathered, the log's code and the
requests' memory stay in the cache through the burst: 2.4-2.7 against 3.6-4.3 µs of the loop a
request over metrics alone, in a serving worker at 64 connections (``benchmarks/ANALYSIS.md``).
64 requests are held a few milliseconds longer (about 1 KB each)."""

VERSION_OF, TIME_OF, ROWS = itemgetter(0), itemgetter(4), itemgetter(5)

Protect = Callable[[ModelVersion, pa.Table], pa.Table]
"""What the writer thread passes each segment's rows (one version's) through before writing
them: the personal-data rules (``dockyard.governance.anonymize``). A table it cannot protect
raises: its rows are shed, never written as they came."""


@dataclass
class _Segment:
    """One segment to write (one version's rows of one day), built a slice at a time."""

    version: ModelVersion
    day: str
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    newest: float = -math.inf
    """The time of its newest row (seconds, UTC)."""

    def table(self) -> pa.Table:
        """The slices as one table: a column some slice lacks is null there; one that is a
        value per row in some slices and a list in others (a tensor outside the signature, one
        wide in some requests) is a list in all, as one table built of all of them has it."""
        return concat(self.tables, BASE_SCHEMA)


class PredictionLog:
    """One worker's prediction log: ``append`` on the hot path, a writer thread off it."""

    def __init__(
        self,
        root: Path,
        *,
        flush_s: float = 1.0,
        queue_rows: int = 100_000,
        sample: float = 1.0,
        samples: Mapping[str, float] | None = None,
        cipher: Cipher | None = None,
        clock: Callable[[], float] = time.time,
        compact_every_s: float | None = COMPACT_EVERY_S,
        compact_age_s: float = COMPACT_AGE_S,
        protect: Protect | None = None,
        process: bool = False,
    ) -> None:
        """``root`` is the home's ``predictions`` folder; ``sample`` the share of requests kept,
        ``samples`` per model overrides; ``clock`` gives each row's time (seconds, UTC), and
        the time compaction measures ages by; ``compact_every_s`` None: the writer thread does
        not compact (``compact`` still does); ``protect``: see ``Protect``; ``process``: once
        started, write from a child process (``process.WriterProcess``) rather than the thread."""
        self._root = root
        self._protect = protect
        self._flush_s = flush_s
        self._limit = queue_rows
        self._sample = sample
        self._samples = dict(samples or {})
        self._cipher = cipher
        self._clock = clock
        self._random = random.random
        self._gathered: list[Entry] = []
        """Requests appended and not yet absorbed (at most ``GATHER_REQUESTS``)."""
        self._queue: deque[Entry | Block] = deque()
        self._open: Block | None = None
        """The block ``_absorb`` copies requests into, not yet in the queue."""
        self._lock = threading.Lock()
        """Held while ``_absorb`` writes into the open block or queues, and while the writer
        takes the open block: the loop never copies into a block the writer builds."""
        self._held: dict[tuple[str, int, str], _Segment] = {}
        """Rows built and not yet written, per model, version and day."""
        # Each counter has one writer thread, so none needs a lock: rows queued and shed by the
        # hot path, requests queued under the lock; requests taken and rows written (or
        # failed) by the writer.
        self._queued = 0
        self._queued_requests = 0
        self._taken_requests = 0
        self._shed_full = 0
        self._done = 0
        self._shed_failed = 0
        self.written_rows = 0
        """Rows written to segments so far."""
        self.writer_seconds = 0.0
        """CPU seconds spent building, writing and merging segments so far (by the writer thread,
        and by ``close``'s last flush)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forks = process
        self._child: WriterProcess | None = None
        """The writer process, while one runs: the thread then ships it the queue."""
        self._shipped = 0
        """Rows shipped to the writer process."""
        self._acked = Counts(0, 0, 0, 0.0, 0)
        """The writer process's counters as it last told them."""
        self._paces = True
        """Whether builds pause between slices for the event loop (not in the writer process,
        which has none)."""
        self._last_error_log = -math.inf
        self._compact_every_s = compact_every_s
        self._compact_age_s = compact_age_s
        self._next_compact = time.monotonic() + (compact_every_s or 0.0)
        self._folders: set[Path] = set()
        """Day folders this worker wrote to, compacted until their day is over."""
        self._floors: dict[Path, int] = {}
        """Per day folder, the newest ``seq`` this worker merged: new segments go past it."""

    @classmethod
    def for_worker(
        cls, settings: Settings, home: Home, protect: Protect | None = None
    ) -> PredictionLog:
        """The log ``settings`` describe, writing under ``home`` (call it in the worker process:
        segment names carry its process id), its rows passed through ``protect``."""
        samples = {name: settings.model_options(name).log_sample for name in settings.models}
        return cls(
            home.root / PREDICTIONS,
            flush_s=settings.log_flush_s,
            queue_rows=settings.log_queue_rows,
            sample=settings.log_sample,
            samples=samples,
            cipher=log_cipher(settings, home),
            protect=protect,
            process=True,
        )

    @property
    def shed_rows(self) -> int:
        """Rows not logged: the queue was full, or writing them failed (logged as a warning)."""
        return self._shed_full + self._shed_failed

    @property
    def pending_rows(self) -> int:
        """Rows appended and not yet written (gathered, copied, queued, held or being
        written)."""
        return self._queued - self._done

    def append(
        self,
        version: ModelVersion,
        request_id: str,
        principal: str,
        seconds: float,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Log one answered request (gathered as it is, and every ``GATHER_REQUESTS`` requests
        copied into blocks in one go: ``_absorb``), unless the sample leaves it out or the queue
        is full (then its rows are counted as shed)."""
        rate = self._samples.get(version.model, self._sample) if self._samples else self._sample
        if rate < 1.0 and self._random() >= rate:
            return
        first = next(iter(outputs.values()))
        rows: int = first.shape[0] if first.ndim else 1
        if not rows:
            return
        if self._queued - self._done + rows > self._limit:
            self._shed_full += rows
            return
        self._queued += rows
        gathered = self._gathered
        gathered.append(
            (version, request_id, principal, seconds, self._clock(), rows, inputs, outputs)
        )
        if len(gathered) >= GATHER_REQUESTS:
            self._absorb()

    def _absorb(self) -> None:
        """Copy the gathered requests into the open block, else queue them by reference. Called
        by the event loop as requests gather, and by ``flush``: the lock keeps the two apart,
        and ``append`` only adds past what is taken."""
        with self._lock:
            gathered = self._gathered
            count = len(gathered)
            for entry in gathered[:count]:
                block = self._open
                if block is not None:
                    if block.take(entry):
                        continue
                    self._queue_open()
                block = Block.open(entry)
                if block is not None and block.take(entry):
                    self._open = block
                    continue
                self._queue.append(entry)
                self._queued_requests += 1
            del gathered[:count]

    def _queue_open(self) -> None:
        """Move the open block to the queue (with ``_lock`` held)."""
        block = self._open
        if block is not None:
            self._open = None
            self._queue.append(block)
            self._queued_requests += block.requests

    async def start(self) -> None:
        """Fork the writer process (when the log has one) and start the thread (in the worker,
        after any fork of it)."""
        if self._forks:
            self._child = WriterProcess.fork(self)
        self._thread = threading.Thread(
            target=self._run, name="dockyard-prediction-log", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        """Stop the writer and write everything still queued: a graceful stop loses nothing."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        await asyncio.to_thread(self.flush)
        if self._child is not None:
            child, self._child = self._child, None
            await asyncio.to_thread(child.stop)

    def _run(self) -> None:
        flush_at = time.monotonic() + self._flush_s
        while not self._stop.wait(min(BUILD_EVERY_S, self._flush_s)):
            if time.monotonic() < flush_at:
                if self._child is not None:
                    self._ship()
                else:
                    self.build(whole_slices=True)
                continue
            flush_at = time.monotonic() + self._flush_s
            self.flush()
            if self._compact_every_s and time.monotonic() >= self._next_compact:
                self._next_compact = time.monotonic() + self._compact_every_s
                self.compact()

    def compact(self) -> int:
        """Merge this worker's old segments in the folders it wrote to; the segments removed.
        Dead workers' segments are left to the monitoring process (``sweep_orphans``). Called by
        the writer thread (never during a flush); failures are logged, never raised: compaction
        is an optimisation. With a writer process, that process compacts."""
        if self._child is not None:
            with self._talking():
                return self._heard(self._child.compact())
            return 0  # it died
        began = time.thread_time()
        now = self._clock()
        removed = 0
        for folder in sorted(self._folders):
            try:
                result = compact_folder(
                    folder, self._cipher, now=now, age_s=self._compact_age_s, orphans=False
                )
            except Exception:
                logger.exception("prediction log: compacting %s failed", folder)
                continue
            removed += result.removed
            if result.newest:
                self._floors[folder] = max(self._floors.get(folder, 0), result.newest)
            if folder.name < day_name(int(now // DAY_S) - 1):
                self._folders.discard(folder)  # over for two days: nothing of ours is left
                self._floors.pop(folder, None)
        self.writer_seconds += time.thread_time() - began
        return removed

    def build(self, *, whole_slices: bool = False) -> None:
        """Build what is queued now into rows held for the next ``flush``, ``SLICE_REQUESTS``
        requests at a time, with a pause after each slice while the writer keeps up
        (``_keeps_up``); ``whole_slices``: only as many requests as fill whole slices (the rest
        waits for the next build: a table costs about as much to build from a few requests as
        from a slice's). Called by the writer thread (and by ``flush``), never concurrently."""
        count = self._queued_requests - self._taken_requests
        if whole_slices:
            count -= count % SLICE_REQUESTS
        if not count:
            return
        started = time.thread_time()
        end = self._taken_requests + count
        while self._taken_requests < end:
            began = time.thread_time()
            self._build_slice(min(SLICE_REQUESTS, end - self._taken_requests))
            if self._taken_requests < end and self._keeps_up():
                self._pause(time.thread_time() - began)
        self.writer_seconds += time.thread_time() - started

    def flush(self) -> int:
        """Queue the open block, build what is queued now and write every row held, one segment
        per model version and day; the rows written. Called by the writer thread (and by
        ``close`` once it has stopped), never concurrently. With a writer process, the queue is
        shipped to it and it writes."""
        self._absorb()
        with self._lock:
            self._queue_open()
        if self._child is not None:
            written = self.written_rows
            self._ship()
            if (child := self._child) is not None:
                with self._talking():
                    self._heard(child.flush())
            if self._child is not None:
                return self.written_rows - written
            # It died: the thread writes what was not shipped.
        self.build()
        if not self._held:
            return 0
        started = time.thread_time()
        held, self._held = self._held, {}
        written = sum(self._write(segment) for segment in held.values())
        self.written_rows += written
        self.writer_seconds += time.thread_time() - started
        return written

    def _ship(self) -> None:
        """Hand everything queued to the writer process; should it have died, keep it for the
        thread to write."""
        assert self._child is not None
        began = time.thread_time()
        with self._lock:
            items, self._queue = self._queue, deque()
            requests = self._queued_requests
        if not items:
            return
        rows = sum(map(_rows, items))
        with self._talking():
            try:
                self._child.ship(items)
            except ChildGone:
                raise
            except Exception:  # a value that cannot be pickled: nothing reached the pipe
                self._shed_failed += rows
                self._done += rows
                logger.exception("prediction log: %d rows could not be shipped and are shed", rows)
            else:
                self._shipped += rows
            self._taken_requests = requests
            items.clear()
        self._queue.extendleft(reversed(items))  # not shipped: the thread writes them
        self.writer_seconds += time.thread_time() - began

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Around each exchange with the writer process: if it has died, the rows it held are
        shed and this worker's thread writes from then on."""
        try:
            yield
        except ChildGone as exc:
            self._child = None
            lost = self._shipped - self._acked.done
            self._shed_failed += lost
            self._done += lost
            logger.error(
                "prediction log: the writer process ended (%s); %d rows it held are shed, and "
                "this worker's thread writes the log from now on",
                exc,
                lost,
            )

    def _heard(self, counts: Counts) -> int:
        """Take the writer process's counters; the segments its last compaction removed."""
        last, self._acked = self._acked, counts
        self._done += counts.done - last.done
        self._shed_failed += counts.shed - last.shed
        self.written_rows += counts.written - last.written
        self.writer_seconds += counts.seconds - last.seconds
        return counts.removed

    def become_writer(self) -> None:
        """Make this copy of the log (in the forked writer process) the one that writes: a
        lock of its own (the worker's may have been held at the fork), no pauses, and nothing
        queued or counted yet (the worker ships what it holds, and counts from its own)."""
        self._lock = threading.Lock()
        self._paces = False
        self._child = None
        self._thread = None
        self._gathered, self._queue, self._open = [], deque(), None
        self._queued = self._queued_requests = self._taken_requests = 0
        self._done = self._shed_failed = self.written_rows = 0
        self.writer_seconds = 0.0

    def receive(self, items: Sequence[Block | Entry]) -> None:
        """Queue ``items`` shipped from the worker (in the writer process) and build what
        fills whole slices."""
        self._queue.extend(items)
        for item in items:
            self._queued += _rows(item)
            self._queued_requests += item.requests if isinstance(item, Block) else 1
        self.build(whole_slices=True)

    def counts(self, removed: int = 0) -> Counts:
        """What this log has done (the writer process's answer to the worker), with the
        segments a compaction just removed."""
        return Counts(
            self._done, self._shed_failed, self.written_rows, self.writer_seconds, removed
        )

    def _keeps_up(self) -> bool:
        """Whether the writer may pause between slices: not once the log is closing (nothing is
        served then), nor while half the queue's room is taken (pausing could shed rows)."""
        return self._paces and not self._stop.is_set() and 2 * self.pending_rows <= self._limit

    def _pause(self, seconds: float) -> None:
        """Let the event loop have the GIL for ``seconds`` (the CPU time of the last slice: GIL
        waits, which can be the most of a slice's wall time, do not count)."""
        time.sleep(seconds)

    def _build_slice(self, count: int) -> None:
        """Take ``count`` requests off the queue (more when its last block holds more) and hold
        their rows in order; a part that cannot be built is shed."""
        taken = 0
        entries: list[Entry] = []
        while taken < count:
            item = self._queue.popleft()
            if isinstance(item, Block):
                self._build_entries(entries)
                entries = []
                self._build_block(item)
                taken += item.requests
            else:
                entries.append(item)
                taken += 1
        self._build_entries(entries)
        self._taken_requests += taken

    def _build_entries(self, entries: list[Entry]) -> None:
        """Hold the rows of requests queued by reference."""
        if not entries:
            return
        for group in _by_version(entries):
            version = group[0][0]
            for day, part in _by_day(group):
                rows = sum(map(ROWS, part))
                try:
                    table = segment_table(part)
                except Exception:
                    self._shed(version, rows)
                    continue
                self._hold(version, day, table, rows, max(map(TIME_OF, part)))

    def _build_block(self, block: Block) -> None:
        """Hold the rows of a block."""
        try:
            table = block.table()
        except Exception:
            self._shed(block.version, block.rows)
            return
        self._hold(block.version, day_name(block.day), table, block.rows, block.newest)

    def _hold(
        self, version: ModelVersion, day: str, table: pa.Table, rows: int, newest: float
    ) -> None:
        """Keep ``table`` (``rows`` rows of ``version`` on ``day``, the newest at ``newest``) for
        the next write."""
        key = (version.model, version.version, day)
        segment = self._held.get(key)
        if segment is None:
            segment = self._held[key] = _Segment(version, day)
        segment.tables.append(table)
        segment.rows += rows
        segment.newest = max(segment.newest, newest)

    def _write(self, segment: _Segment) -> int:
        """Write ``segment`` (through ``protect``); the rows written, 0 when they were shed."""
        version = segment.version
        try:
            table = segment.table()
            if self._protect is not None:
                table = self._protect(version, table)
            folder = self._root / version.model / segment.day
            newest = segment.newest
            floor = self._floors.get(folder)
            if floor is not None:  # the name goes past what this worker merged
                newest = max(newest, (floor + 1) / 1000)
            write_segment(folder, table, self._cipher, newest)
            self._folders.add(folder)
        except Exception:
            self._shed(version, segment.rows)
            return 0
        self._done += segment.rows
        return segment.rows

    def _shed(self, version: ModelVersion, rows: int) -> None:
        """``rows`` of ``version`` could not be written (called in an ``except`` block)."""
        self._shed_failed += rows
        self._done += rows
        self._log_failure(version, rows)

    def _log_failure(self, version: ModelVersion, rows: int) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY_S:
            self._last_error_log = now
            logger.exception(
                "prediction log: %d rows of %s could not be written and are shed (further "
                "failures are logged at most every %g s)",
                rows,
                version.ref,
                ERROR_LOG_EVERY_S,
            )


def _rows(item: Block | Entry) -> int:
    """The rows of a queued block or request."""
    return item.rows if isinstance(item, Block) else ROWS(item)


def _by_version(entries: list[Entry]) -> list[list[Entry]]:
    """``entries`` grouped by the version that answered them (usually all one)."""
    versions = list(map(VERSION_OF, entries))
    if versions.count(versions[0]) == len(versions):
        return [entries]
    groups: dict[tuple[str, int], list[Entry]] = {}
    for version, entry in zip(versions, entries, strict=True):
        groups.setdefault((version.model, version.version), []).append(entry)
    return list(groups.values())


def _by_day(group: list[Entry]) -> list[tuple[str, list[Entry]]]:
    """``group`` split by the UTC day of each entry's time (one part, unless it spans midnight)."""
    days = [int(entry[4] // DAY_S) for entry in (group[0], group[-1])]
    if days[0] == days[1]:
        return [(day_name(days[0]), group)]
    parts: dict[int, list[Entry]] = {}
    for entry in group:
        parts.setdefault(int(entry[4] // DAY_S), []).append(entry)
    return [(day_name(day), part) for day, part in sorted(parts.items())]
