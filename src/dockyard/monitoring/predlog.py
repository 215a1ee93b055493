"""The prediction log: every answered request (or a sampled share), one row per predicted row, in
Parquet segments that DuckDB, pandas or pyarrow read as they are.

Layout: ``$DOCKYARD_HOME/predictions/<model>/<YYYY-MM-DD>/<pid>-<seq>.parquet`` (UTC days). A
worker writes one segment per flush for each version and day it logged; ``seq`` is at least the
newest row's time in milliseconds (and unique in the process), so a reader skips a segment older
than its window by its name alone. Segments are written beside their final name and linked into
place, never overwriting one: a reader never sees half a file.

Columns: ``request_id``, ``row`` (index within the request), ``time`` (when the answer was sent),
``principal``, ``model``, ``version``, ``latency_ms``, then ``input.<name>`` and ``output.<name>``
per tensor of the signature. A tabular model's ``[N, F]`` tensor is split into its features; a
tensor of one value per row is a scalar column, a wider one a list column (a classifier's
probabilities: ``list<double>``). The writer passes each segment's rows through ``protect``
first (the personal-data rules of governance: columns dropped, masked, hashed or generalized), so
what a request held reaches the disk only as those rules allow.

Encryption: when the ``encryption_key`` setting is set, segments are sealed with it
(``.parquet.sealed``: AES-256-GCM over the whole file, bound to its name) and readers need the same
key. Without the setting they are plain Parquet (mode 0600, in 0700 folders): analysis tools can
read them, which is the point of the format.

The hot path only appends a reference to the request's arrays to a queue (``append``); a thread
builds and writes the segments every ``log_flush_s``. Past ``log_queue_rows`` rows waiting (queued
or being written), new rows are shed and counted (``shed_rows``) rather than held.

Compaction: a busy server would leave one small segment per worker per second (86,400 a day), and
readers pay for each file they open. So the writer thread, after a flush and at most every
``COMPACT_EVERY_S``, merges its own segments older than ``COMPACT_AGE_S`` into merged segments
named ``<pid>-<first>-<last>.parquet[.sealed]``: they hold exactly the rows of that pid's segments
with ``first <= seq <= last`` in the folder when they were merged (``last`` is the newest
``seq``: readers still skip by name alone). Merges stay within an hour of ``seq``; in the current
hour only the new small segments are merged (one file a minute), once the hour is over all its
segments are merged into one (files kept under ``COMPACT_MAX_BYTES`` each): a day ends as about 24
files per worker. The steps are ordered so that no state loses or duplicates a row:

1. the merged file is written beside its final name (fsynced) and linked into place, never
   replacing a file: a name that exists means another compactor did the same work, and nothing
   is deleted;
2. only then are the merged originals deleted. A reader ignores any segment whose ``seq`` range
   lies within a merged segment's range of the same pid, so a worker killed between 1 and 2
   leaves originals that are never read twice, and the next compaction deletes them.
3. A reader lists the folders, reads, and lists again: if a segment it read has gone or a new
   merged segment appeared meanwhile, it reads what changed (files already read are kept) until
   two listings agree. Deleting a file it has open does not disturb it.

A worker never writes a new segment into a range it has merged (``seq`` is raised past it, which
keeps it an upper bound of the rows' times), so a late flush is never hidden. Segments of a pid
that is no longer alive on this host (a killed or replaced worker) are compacted by any worker
once older than ``ORPHAN_AGE_S``, under a lock file per model folder (``.compact.lock``) so only
one does it at a time. Sealed segments are read with the key and merged sealed; a compactor without
the key leaves them as they are. External tools reading the raw folders (DuckDB on ``*.parquet``)
may see a merged segment and its originals together for the instant between steps 1 and 2, or
after a crash there; ``dockyard monitor log export`` never does.

Retention's purge and a data subject's erasure remove rows from written segments: holding the
model folder's ``REWRITE_LOCK`` exclusively (each compaction takes it shared, and skips the folder
while a rewrite holds it), they replace a segment by its remaining rows (a fsynced file renamed
over it) or delete it. Names do not change, so the rules above still hold; writers only ever
create new files, so rows they write meanwhile are untouched.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import itertools
import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dockyard.config import Settings
from dockyard.datatypes import numpy_dtype
from dockyard.encryption import Cipher, open_cipher
from dockyard.errors import DockyardError, InvalidInput, Unavailable
from dockyard.home import DIR_MODE, SECRET_FILE_MODE, Home, process_is_alive
from dockyard.registry.records import ModelVersion, TensorSpec
from dockyard.registry.refs import check_name

logger = logging.getLogger(__name__)
Result = TypeVar("Result")

PREDICTIONS = "predictions"
INPUT = "input."
OUTPUT = "output."
PARQUET = ".parquet"
SEALED = ".sealed"
SEGMENT_NAME = re.compile(r"^(\d+)-(\d+)(?:-(\d+))?\.parquet(\.sealed)?$")
"""``<pid>-<seq>``, or a merged segment ``<pid>-<first>-<last>``."""
DAY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_S = 86_400
TIME = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", TIME),
        ("principal", pa.string()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("latency_ms", pa.float32()),
    ]
)
FORMATS = ("csv", "json", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}
EXPORT_LIMIT = 100_000
"""Most rows one read of the log over HTTP answers with (``GET /api/models/{m}/predictions``)."""
ERROR_LOG_EVERY_S = 60.0
"""A writer that keeps failing (a full disk) logs the failure at most this often."""
LIST_OFFSETS_MAX = 2**31 - 1
HOUR_MS = 3_600_000
COMPACT_EVERY_S = 60.0
"""How often a worker's writer thread compacts (after a flush)."""
COMPACT_AGE_S = 300.0
"""A worker merges its own segments once their ``seq`` is this old: well past any flush delay."""
ORPHAN_AGE_S = 3600.0
"""Segments of a pid not alive on this host are merged by another worker once this old."""
ORPHAN_SWEEP_S = 3600.0
"""How often a worker looks through every day folder for such segments."""
COMPACT_MAX_BYTES = 32 * 2**20
"""Largest input (bytes on disk) merged into one segment: bounds the compactor's memory."""
MERGED_ROW_GROUP = 65_536
"""Rows per row group of a merged segment: small enough for time filters to skip groups."""
STALE_TEMP_S = 3600.0
"""A temporary file this old was left by a killed writer: compaction removes it."""
READ_ATTEMPTS = 20
"""Listings a read tries before giving up on a folder that never stops changing."""
LOCK_NAME = ".compact.lock"
REWRITE_LOCK = ".rewrite.lock"
"""Of a model's folder: taken shared by each compaction, exclusively by a purge or an erasure
rewriting its segments, so a merge never copies rows that are being removed."""
REWRITE_WAIT_S = 120.0
"""How long a rewrite waits for the compactions in progress before giving up."""
LOCK_POLL_S = 0.05

VERSION_OF, TIME_OF, ROWS = itemgetter(0), itemgetter(4), itemgetter(5)
INPUTS_OF, OUTPUTS_OF = itemgetter(6), itemgetter(7)
LOW_CARDINALITY = ["principal", "model"]
"""Columns dictionary-encoded in segments (dictionaries on numbers cost 8x the write time)."""
STATISTICS = ["time", "version"]
"""Columns with statistics in segments: what readers filter on."""

Entry = tuple[
    ModelVersion, str, str, float, float, int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]
]
"""What ``append`` queues: version, request id, principal, seconds, time, rows, inputs, outputs."""
Protect = Callable[[ModelVersion, pa.Table], pa.Table]
"""What the writer thread passes each segment's rows (one version's) through before writing
them: the personal-data rules (``dockyard.governance.anonymize``). A table it cannot protect
raises: its rows are shed, never written as they came."""


def predictions_folder(home: Home, model: str) -> Path:
    """Where ``model``'s segments live (the name checked: it becomes a path)."""
    return home.root / PREDICTIONS / check_name(model)


def log_cipher(settings: Settings, home: Home) -> Cipher | None:
    """The cipher segments are sealed with: the ``encryption_key`` setting's, else None (plain)."""
    return open_cipher(home.secrets, settings.encryption_key) if settings.encryption_key else None


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
    ) -> None:
        """``root`` is the home's ``predictions`` folder; ``sample`` the share of requests kept,
        ``samples`` per model overrides; ``clock`` gives each row's time (seconds, UTC), and
        the time compaction measures ages by; ``compact_every_s`` None: the writer thread does
        not compact (``compact`` still does); ``protect``: see ``Protect``."""
        self._root = root
        self._protect = protect
        self._flush_s = flush_s
        self._limit = queue_rows
        self._sample = sample
        self._samples = dict(samples or {})
        self._cipher = cipher
        self._clock = clock
        self._random = random.random
        self._queue: deque[Entry] = deque()
        # Each counter has one writer thread, so none needs a lock: rows queued and shed by the
        # hot path; rows written (or failed) by the writer.
        self._queued = 0
        self._shed_full = 0
        self._done = 0
        self._shed_failed = 0
        self.written_rows = 0
        """Rows written to segments so far."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error_log = -math.inf
        self._compact_every_s = compact_every_s
        self._compact_age_s = compact_age_s
        self._next_compact = time.monotonic() + (compact_every_s or 0.0)
        self._next_sweep = -math.inf
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
        )

    @property
    def shed_rows(self) -> int:
        """Rows not logged: the queue was full, or writing them failed (logged as a warning)."""
        return self._shed_full + self._shed_failed

    @property
    def pending_rows(self) -> int:
        """Rows appended and not yet written (queued or being written)."""
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
        """Queue one answered request (a reference to its arrays, nothing copied), unless the
        sample leaves it out or the queue is full (then its rows are counted as shed)."""
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
        self._queue.append(
            (version, request_id, principal, seconds, self._clock(), rows, inputs, outputs)
        )

    async def start(self) -> None:
        """Start the writer thread (in the worker, after any fork)."""
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

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()
            if self._compact_every_s and time.monotonic() >= self._next_compact:
                self._next_compact = time.monotonic() + self._compact_every_s
                self.compact()

    def compact(self, *, sweep: bool | None = None) -> int:
        """Merge this worker's old segments in the folders it wrote to and, on a ``sweep``
        (None: when ``ORPHAN_SWEEP_S`` has passed), those of dead pids in every day folder; the
        segments removed. Called by the writer thread (never during a flush); failures are
        logged, never raised: compaction is an optimisation."""
        if sweep is None:
            sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + ORPHAN_SWEEP_S
        now = self._clock()
        folders = set(self._folders)
        if sweep:
            folders.update(_day_folders(self._root))
        removed = 0
        for folder in sorted(folders):
            try:
                result = compact_folder(folder, self._cipher, now=now, age_s=self._compact_age_s)
            except Exception:
                logger.exception("prediction log: compacting %s failed", folder)
                continue
            removed += result.removed
            if result.newest:
                self._floors[folder] = max(self._floors.get(folder, 0), result.newest)
            if folder.name < _day_name(int(now // DAY_S) - 1):
                self._folders.discard(folder)  # over for two days: nothing of ours is left
                self._floors.pop(folder, None)
        return removed

    def flush(self) -> int:
        """Write what is queued now, one segment per model version and day; the rows written.
        Called by the writer thread (and by ``close`` once it has stopped), never concurrently."""
        count = len(self._queue)
        if not count:
            return 0
        entries = [self._queue.popleft() for _ in range(count)]
        written = 0
        for group in _by_version(entries):
            version = group[0][0]
            for day, part in _by_day(group):
                rows = sum(map(ROWS, part))
                try:
                    table = _segment_table(part)
                    if self._protect is not None:
                        table = self._protect(version, table)
                    folder = self._root / version.model / day
                    newest = max(map(TIME_OF, part))
                    floor = self._floors.get(folder)
                    if floor is not None:  # the name goes past what this worker merged
                        newest = max(newest, (floor + 1) / 1000)
                    write_segment(folder, table, self._cipher, newest)
                    self._folders.add(folder)
                except Exception:
                    self._shed_failed += rows
                    self._log_failure(version, rows)
                else:
                    written += rows
                self._done += rows
        self.written_rows += written
        return written

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
        return [(_day_name(days[0]), group)]
    parts: dict[int, list[Entry]] = {}
    for entry in group:
        parts.setdefault(int(entry[4] // DAY_S), []).append(entry)
    return [(_day_name(day), part) for day, part in sorted(parts.items())]


def _day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))


def _segment_table(entries: list[Entry]) -> pa.Table:
    """The rows of ``entries`` (one version) as a table; entries whose requests named different
    tensors (outputs asked for, one matrix or a tensor per feature) are built apart and joined,
    the columns one lacks left null."""
    inputs = map(tuple, map(INPUTS_OF, entries))
    keys = list(zip(inputs, map(tuple, map(OUTPUTS_OF, entries)), strict=True))
    if keys.count(keys[0]) == len(keys):
        return _table(entries)
    layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Entry]] = {}
    for key, entry in zip(keys, entries, strict=True):
        layouts.setdefault(key, []).append(entry)
    tables = [_table(part) for part in layouts.values()]
    return pa.concat_tables(tables, promote_options="permissive")


def _table(entries: list[Entry]) -> pa.Table:
    versions, ids, principals, seconds, times, rows, inputs, outputs = zip(*entries, strict=True)
    version: ModelVersion = versions[0]
    counts = np.asarray(rows, dtype=np.int64)
    total = int(counts.sum())
    index = None if total == len(entries) else np.repeat(np.arange(len(entries)), counts)

    def per_row(values: np.ndarray) -> np.ndarray:
        return values if index is None else values[index]

    def strings(values: Sequence[str]) -> pa.Array:
        array = pa.array(values, pa.string())
        return array if index is None else array.take(index)

    if index is None:
        row = np.zeros(total, dtype=np.int32)
    else:
        row = (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
    stamps = (np.asarray(times, dtype=np.float64) * 1e6).astype(np.int64)
    latency = np.asarray(seconds, dtype=np.float64) * 1000.0
    columns: dict[str, pa.Array] = {
        "request_id": strings(ids),
        "row": pa.array(row),
        "time": pa.array(per_row(stamps), TIME),
        "principal": strings(principals),
        "model": pa.repeat(pa.scalar(version.model, pa.string()), total),
        "version": pa.array(np.full(total, version.version, dtype=np.int32)),
        "latency_ms": pa.array(per_row(latency).astype(np.float32)),
    }
    signature = version.signature
    columns.update(_input_columns(signature.inputs, signature.tabular, inputs, counts))
    specs = {spec.name: spec for spec in signature.outputs}
    for name in outputs[0]:
        pieces = list(map(itemgetter(name), outputs))
        column = _column(pieces, counts, specs.get(name), scalar=False)
        if column is not None:
            columns[OUTPUT + name] = column
    return pa.table(columns)


def _input_columns(
    specs: Sequence[TensorSpec],
    tabular: bool,
    inputs: Sequence[Mapping[str, np.ndarray]],
    counts: np.ndarray,
) -> dict[str, pa.Array]:
    """``input.<name>`` columns: a tabular model's features (from one ``[N, F]`` tensor or one
    tensor per feature), else one column per named tensor."""
    names = list(inputs[0])
    by_name = {spec.name: spec for spec in specs}
    if tabular and len(names) == 1 and names[0] not in by_name:
        pieces = list(map(itemgetter(names[0]), inputs))
        matrix = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if matrix.shape != (counts.sum(), len(specs)):
            return {}
        return {INPUT + spec.name: _values(matrix[:, j], spec) for j, spec in enumerate(specs)}
    result = {}
    for name in names:
        pieces = list(map(itemgetter(name), inputs))
        column = _column(pieces, counts, by_name.get(name), scalar=tabular)
        if column is not None:
            result[INPUT + name] = column
    return result


def _column(
    pieces: Sequence[np.ndarray], counts: np.ndarray, spec: TensorSpec | None, *, scalar: bool
) -> pa.Array | None:
    """One tensor of each request as a column: a value per row when each row holds one (or
    ``scalar``: a tabular feature sent as ``[N, 1]``), else a list per row. None when a tensor
    does not have one entry per row (``counts``), so it cannot be split into rows."""
    try:
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
    except TypeError:  # a tensor of no dimension
        return None
    if not np.array_equal(lengths, counts):
        return None
    shapes = {piece.shape[1:] for piece in pieces}
    if len(shapes) == 1:
        values = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        width = math.prod(shapes.pop())
        if scalar or values.ndim == 1:
            return _values(values.reshape(len(values)), spec)
        offsets = np.arange(0, (len(values) + 1) * width, width, dtype=np.int64)
        return _lists(offsets, _values(values.reshape(-1), spec))
    if scalar:  # features sent as [N] by some requests and [N, 1] by others
        return _values(np.concatenate([piece.reshape(len(piece)) for piece in pieces]), spec)
    matrices = [piece.reshape(len(piece), -1) for piece in pieces]
    widths = np.repeat([matrix.shape[1] for matrix in matrices], counts)
    offsets = np.zeros(len(widths) + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    values = np.concatenate([matrix.reshape(-1) for matrix in matrices])
    return _lists(offsets, _values(values, spec))


def _lists(offsets: np.ndarray, items: pa.Array) -> pa.Array:
    """A list per row: row ``i`` holds ``items[offsets[i]:offsets[i + 1]]``."""
    if offsets[-1] > LIST_OFFSETS_MAX:
        return pa.LargeListArray.from_arrays(pa.array(offsets), items)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), items)


def _values(values: np.ndarray, spec: TensorSpec | None) -> pa.Array:
    """A flat numpy array as an Arrow array: numbers in the signature's type where they convert
    without changing kind, text as strings."""
    if values.dtype.kind in "OSU":
        try:
            return pa.array(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([_text(value) for value in values.tolist()], pa.string())
    if spec is not None and spec.datatype != "BYTES":
        target = numpy_dtype(spec.datatype)
        if values.dtype != target and np.can_cast(values.dtype, target, "same_kind"):
            values = values.astype(target)
    return pa.array(np.ascontiguousarray(values))


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value != value:
        return None
    return str(value)


# Segments: written beside their final name, linked into place; read one at a time.


def write_segment(
    folder: Path,
    table: pa.Table,
    cipher: Cipher | None,
    newest: float,
    *,
    durable: bool = False,
) -> Path:
    """Write ``table`` as a new segment ``<pid>-<seq>.parquet[.sealed]`` in ``folder`` (created,
    mode 0700), where ``seq`` is ``newest`` (the table's newest time, in seconds) in milliseconds,
    or the next number free: an
    existing file (written in the same millisecond, or by an earlier process with the same id) is
    never replaced. ``durable``: on disk (file and folder entry) before this returns. Returns
    its path."""
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    data = _parquet(table)
    pid = os.getpid()
    seq = math.ceil(newest * 1000)
    while True:
        name = f"{pid}-{seq}{PARQUET}{SEALED if cipher else ''}"
        if _publish(folder, name, data, cipher, durable=durable):
            return folder / name
        seq += 1


def _parquet(table: pa.Table, row_group_size: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_size,
        use_dictionary=LOW_CARDINALITY,
        write_statistics=STATISTICS,
    )
    return bytes(sink.getvalue().to_pybytes())


def _publish(folder: Path, name: str, data: bytes, cipher: Cipher | None, *, durable: bool) -> bool:
    """Write ``data`` (sealed to ``name`` with ``cipher``) beside ``folder / name`` and link it
    into place; False, writing nothing, when that name exists. ``durable``: the file and the
    folder entry are on disk before this returns (a merge deletes its originals next)."""
    path = folder / name
    temp = _temp_file(path, data, cipher, durable=durable)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        _sync_folder(folder)
    return True


def _temp_file(path: Path, data: bytes, cipher: Cipher | None, *, durable: bool) -> Path:
    """``data`` (sealed to ``path``'s name with ``cipher``) in a new temporary file beside
    ``path`` (``durable``: fsynced); its path. Nothing is left behind when writing fails."""
    temp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cipher.encrypt(data, path.name.encode()) if cipher else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment(NamedTuple):
    """A segment file: ``last`` is its ``seq`` (no row is newer, in milliseconds); a merged
    segment holds its pid's segments from ``first`` to ``last``, an original has ``first ==
    last``."""

    last: int
    first: int
    pid: int
    path: Path
    merged: bool


def _listing(folder: Path) -> list[Segment]:
    """Every segment file in ``folder``, covered ones included, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = SEGMENT_NAME.match(name)
        if match is not None:
            pid, first = int(match[1]), int(match[2])
            last = first if match[3] is None else int(match[3])
            found.append(Segment(last, first, pid, folder / name, match[3] is not None))
    found.sort()
    return found


def _visible(found: Sequence[Segment]) -> list[Segment]:
    """``found`` less the segments a merged segment of the same pid covers (a range within its
    own, not the same): left by a compaction between linking the merged file and deleting them,
    their rows are in the merged one."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for segment in found:
        if segment.merged:
            spans.setdefault(segment.pid, []).append((segment.first, -segment.last))
    if not spans:
        return list(found)
    widest: dict[int, tuple[list[int], list[int]]] = {}
    for pid, ranges in spans.items():
        starts: list[int] = []
        ends: list[int] = []
        for first, minus_last in sorted(ranges):
            if ends and -minus_last <= ends[-1] and first >= starts[-1]:
                continue  # within the previous range
            starts.append(first)
            ends.append(-minus_last)
        widest[pid] = (starts, ends)
    visible = []
    for segment in found:
        ranges_of = widest.get(segment.pid)
        if ranges_of is not None:
            starts, ends = ranges_of
            index = bisect.bisect_right(starts, segment.first) - 1
            if (
                index >= 0
                and segment.last <= ends[index]
                and (starts[index], ends[index]) != (segment.first, segment.last)
            ):
                continue
        visible.append(segment)
    return visible


def segments(folder: Path) -> list[tuple[int, Path]]:
    """The segments in ``folder`` to read as (seq, path), oldest first (none when it does not
    exist): those a merged segment covers are left out."""
    return [(segment.last, segment.path) for segment in _visible(_listing(folder))]


def _unseal(path: Path, cipher: Cipher) -> bytes:
    try:
        token = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DockyardError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return cipher.decrypt(token, path.name.encode())
    except DockyardError as exc:
        raise DockyardError(f"{path}: {exc.message}") from None


def read_settled(
    listing: Callable[[], list[tuple[int, Path]]],
    compute: Callable[[list[tuple[int, Path]], Callable[[Path], pa.Table]], Result],
    read: Callable[[Path], pa.Table],
    *,
    exact: bool = False,
) -> Result:
    """``compute(found, read)`` over a listing that did not change in a way that matters while
    it ran: listed again afterwards, no segment read may have gone and no merged segment may have
    appeared (``exact``: nothing may have changed); else computed again on the new listing,
    segments already read kept (``read`` is cached). A listing is not atomic: one made while a
    merged file is linked and its originals deleted may see neither, which the second listing
    (where the merged file is) detects."""
    cache: dict[Path, pa.Table] = {}

    def cached(path: Path) -> pa.Table:
        table = cache.get(path)
        if table is None:
            table = cache[path] = read(path)
        return table

    found = listing()
    for _ in range(READ_ATTEMPTS):
        try:
            result = compute(found, cached)
        except FileNotFoundError:
            found = listing()
            continue
        again = listing()
        if _settled(found, again, exact):
            return result
        found = again
    raise DockyardError("the prediction log kept changing while it was read: try again")


def _settled(found: list[tuple[int, Path]], again: list[tuple[int, Path]], exact: bool) -> bool:
    before = {path for _, path in found}
    after = {path for _, path in again}
    if exact:
        return before == after
    if not before <= after:
        return False
    return not any(_is_merged(path) for path in after - before)


def _is_merged(path: Path) -> bool:
    match = SEGMENT_NAME.match(path.name)
    return match is not None and match[3] is not None


# Compaction (see the module docstring).


class Compacted(NamedTuple):
    removed: int
    """Segment files deleted (merged, or covered by a merged one)."""
    newest: int
    """The newest ``seq`` merged of the calling process's segments (0: none)."""


def compact_folder(
    folder: Path,
    cipher: Cipher | None,
    *,
    now: float,
    pid: int | None = None,
    age_s: float = COMPACT_AGE_S,
    orphan_age_s: float = ORPHAN_AGE_S,
    max_bytes: int = COMPACT_MAX_BYTES,
) -> Compacted:
    """Compact one day folder: ``pid``'s segments (None: this process's) with ``seq`` older than
    ``age_s`` before ``now`` (seconds), and, when the model folder's lock is free, those of pids
    not alive on this host older than ``orphan_age_s``. Segments of other live pids are never
    touched: only their writer knows what it is about to write."""
    own = os.getpid() if pid is None else pid
    removed = newest = 0
    with contextlib.ExitStack() as stack:
        if not stack.enter_context(compaction_lock(folder.parent, REWRITE_LOCK, shared=True)):
            return Compacted(0, 0)  # being purged or erased: the next round compacts
        found = _listing(folder)
        pids = sorted({segment.pid for segment in found})
        dead = [other for other in pids if other != own and not process_is_alive(other)]
        if dead and not stack.enter_context(compaction_lock(folder.parent)):
            dead = []  # another worker is compacting them
        owners = [(own, age_s)] if own in pids else []
        owners += [(other, orphan_age_s) for other in dead]
        for owner, age in owners:
            mine = [segment for segment in found if segment.pid == owner]
            removed += _drop_covered(mine)
            cut = math.floor((now - age) * 1000)
            for run in _runs(_visible(mine), cut, max_bytes, cipher):
                try:
                    merged = merge_segments(folder, run, cipher)
                except FileNotFoundError:
                    continue  # compacted by someone else meanwhile
                except Exception:
                    logger.exception("prediction log: merging %d segments failed", len(run))
                    continue
                if merged is None:
                    continue
                removed += _delete(run)
                if owner == own:
                    newest = max(newest, run[-1].last)
    _remove_stale_temps(folder)
    return Compacted(removed, newest)


def _runs(
    visible: Sequence[Segment], cut: int, max_bytes: int, cipher: Cipher | None
) -> list[list[Segment]]:
    """Runs of consecutive segments (one pid's, oldest first) to merge: ``seq`` before ``cut``,
    within one hour, under ``max_bytes``; in an hour not over by ``cut``, small segments only
    (merged ones are kept until the hour is over, then merged together). Sealed segments only
    with a ``cipher``. A run of one segment is left as it is."""
    runs: list[list[Segment]] = []
    run: list[Segment] = []
    size = 0
    hour = -1

    def close() -> None:
        if len(run) >= 2:
            runs.append(run)

    for segment in visible:
        if segment.last >= cut:
            break
        this_hour = segment.last // HOUR_MS
        over = (this_hour + 1) * HOUR_MS <= cut
        usable = (over or not segment.merged) and (
            cipher is not None or not segment.path.name.endswith(SEALED)
        )
        try:
            bytes_on_disk = segment.path.stat().st_size
        except FileNotFoundError:
            usable = False
            bytes_on_disk = 0
        if not usable or this_hour != hour or (run and size + bytes_on_disk > max_bytes):
            close()
            run, size, hour = [], 0, this_hour
        if usable:
            run.append(segment)
            size += bytes_on_disk
    close()
    return runs


def merge_segments(folder: Path, run: Sequence[Segment], cipher: Cipher | None) -> Path | None:
    """Step 1 of a merge: the rows of ``run`` (consecutive segments of one pid) written as the
    merged segment ``<pid>-<first>-<last>`` (sealed with a ``cipher``), on disk before this
    returns; None when that name exists (nothing written). The originals are left: ``_delete``
    is step 2."""
    tables = [read_segment(segment.path, None, None, cipher) for segment in run]
    table = concat(tables, BASE_SCHEMA)
    name = f"{run[0].pid}-{run[0].first}-{run[-1].last}{PARQUET}{SEALED if cipher else ''}"
    data = _parquet(table, MERGED_ROW_GROUP)
    return folder / name if _publish(folder, name, data, cipher, durable=True) else None


def _delete(found: Iterable[Segment]) -> int:
    count = 0
    for segment in found:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
            count += 1
    return count


def _drop_covered(found: Sequence[Segment]) -> int:
    """Delete the segments a merged segment covers (a compaction killed before deleting them):
    readers already skip them."""
    visible = set(_visible(found))
    return _delete(segment for segment in found if segment not in visible)


@contextlib.contextmanager
def compaction_lock(folder: Path, name: str = LOCK_NAME, *, shared: bool = False) -> Iterator[bool]:
    """Yields whether this process got the exclusive (``shared``: a shared) lock ``name`` of
    ``folder`` (not waiting for it); released on exit (and by the system when the process
    dies)."""
    try:
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, SECRET_FILE_MODE)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove_stale_temps(folder: Path) -> None:
    """Delete temporary files a killed writer or compactor left (older than ``STALE_TEMP_S``)."""
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".tmp")]
    except FileNotFoundError:
        return
    for name in names:
        path = folder / name
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < time.time() - STALE_TEMP_S:
                path.unlink()


def _day_folders(root: Path) -> list[Path]:
    """Every day folder of every model under ``root``."""
    try:
        models = os.listdir(root)
    except FileNotFoundError:
        return []
    folders = []
    for model in models:
        with contextlib.suppress(NotADirectoryError, FileNotFoundError):
            folders += [
                root / model / day for day in os.listdir(root / model) if DAY_NAME.match(day)
            ]
    return folders


# Rewrites: the retention's purge and the erasure of a data subject.


class Purged(NamedTuple):
    segments: int
    """Segment files deleted (all their rows were older than the cutoff)."""
    rows: int
    """Rows removed: those of the deleted segments (where their footer could be read) and
    those cut from segments that straddled the cutoff."""


@contextlib.contextmanager
def exclusive_lock(
    folder: Path, name: str = REWRITE_LOCK, wait_s: float = REWRITE_WAIT_S
) -> Iterator[None]:
    """Hold the lock ``name`` of ``folder`` exclusively: wait (up to ``wait_s``) for the
    compactions holding it; Unavailable past that."""
    deadline = time.monotonic() + wait_s
    while True:
        with compaction_lock(folder, name) as locked:
            if locked:
                yield
                return
        if time.monotonic() >= deadline:
            raise Unavailable(
                f"{folder} stayed locked by a compaction for {wait_s:g} s: try again later"
            )
        time.sleep(LOCK_POLL_S)


def all_segments(folder: Path) -> list[Path]:
    """The segments of a model's folder (of its day folders, or the folder itself: labels),
    oldest day first, for a rewrite that must leave no copy of a row behind: segments a merged
    one covers are deleted first (their rows are in it). Hold ``exclusive_lock`` meanwhile."""
    found: list[Path] = []
    for day in [folder, *sorted(folder / name for name in _days(folder))]:
        listed = _listing(day)
        _drop_covered(listed)
        found += [segment.path for segment in _visible(listed)]
    return found


def rewrite_segment(
    path: Path, drop: Callable[[pa.Table], pa.ChunkedArray], cipher: Cipher | None
) -> int:
    """Remove from the segment at ``path`` the rows ``drop`` marks (a boolean per row; null
    keeps the row); how many. The rest replace the file atomically (written beside it, fsynced,
    renamed over it, the folder synced), or it is deleted when none is left. Hold the folder's
    ``exclusive_lock``: a compaction must not copy the old file meanwhile."""
    table = read_segment(path, None, None, cipher)
    marked = pc.fill_null(drop(table), False)
    removed = int(pc.sum(marked).as_py() or 0)
    if not removed:
        return 0
    if removed == table.num_rows:
        path.unlink()
    else:
        kept = _parquet(table.filter(pc.invert(marked)), MERGED_ROW_GROUP)
        temp = _temp_file(path, kept, cipher, durable=True)
        try:
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    _sync_folder(path.parent)
    return removed


def purge_before(
    folder: Path, cutoff: datetime, cipher: Cipher | None, *, lock: str = REWRITE_LOCK
) -> Purged:
    """Remove every row older than ``cutoff`` (by its ``time``) from a model's folder: of the
    prediction log (``predictions/<model>``: day folders) or of labels (``lock``: the lock that
    compacting them takes). Day folders before the cutoff's day go whole; in its day, segments
    newer than it by name are kept, older ones deleted, and those that straddle it rewritten
    (``rewrite_segment``). Rows newer than the cutoff are never touched; sealed segments
    straddling it are left (with a warning) without the ``cipher``."""
    if not folder.is_dir():
        return Purged(0, 0)
    cut = math.floor(cutoff.timestamp() * 1000)
    cut_day = _day_name(cut // 1000 // DAY_S)
    stamp = pa.scalar(cutoff, TIME)
    older = pc.field("time") < stamp
    deleted = rows = 0
    with exclusive_lock(folder, lock):
        days = sorted(day for day in _days(folder) if day <= cut_day)
        for place in [folder, *(folder / day for day in days)]:
            listed = _listing(place)
            _drop_covered(listed)  # their rows are in the merged segment: not counted
            whole = place.name < cut_day and place != folder
            for segment in _visible(listed):
                if whole or segment.last < cut:
                    rows += _row_count(segment.path, cipher)
                    deleted += _delete([segment])
                    continue
                try:
                    if read_segment(segment.path, ["time"], older, cipher).num_rows:
                        rows += rewrite_segment(
                            segment.path, lambda table: pc.less(table["time"], stamp), cipher
                        )
                except DockyardError as exc:
                    logger.warning("prediction log: cannot purge %s: %s", segment.path, exc)
            if whole:
                _remove_day(place)
    return Purged(deleted, rows)


def _days(folder: Path) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if DAY_NAME.match(name)]
    except FileNotFoundError:
        return []


def _row_count(path: Path, cipher: Cipher | None) -> int:
    """A segment's rows, from its footer (0 when it is sealed and there is no ``cipher``)."""
    try:
        if not path.name.endswith(SEALED):
            return int(pq.read_metadata(path).num_rows)
        if cipher is None:
            return 0
        return int(pq.read_metadata(pa.BufferReader(_unseal(path, cipher))).num_rows)
    except FileNotFoundError:
        return 0


def _remove_day(folder: Path) -> None:
    """Delete a purged day folder, unless something is left in it: a writer's temporary file
    (rows of that day, purged by a later round once written, or once stale)."""
    _remove_stale_temps(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()


def read_segment(
    path: Path,
    columns: Sequence[str] | None,
    where: pc.Expression | None,
    cipher: Cipher | None,
) -> pa.Table:
    """One segment's rows matching ``where``, only ``columns`` (those it has; None: all)."""
    file_format = pads.ParquetFileFormat()
    if path.name.endswith(SEALED):
        if cipher is None:
            raise DockyardError(
                f"{path.name} is encrypted: set encryption_key (DOCKYARD_ENCRYPTION_KEY) to the "
                "key it was written with to read it"
            )
        fragment = file_format.make_fragment(pa.BufferReader(_unseal(path, cipher)))
    else:
        # Opened here: a missing file raises FileNotFoundError (the reader lists again), and
        # one deleted by a compaction while open still reads.
        fragment = file_format.make_fragment(pa.OSFile(str(path)))
    if columns is not None:
        present = set(fragment.physical_schema.names)
        columns = [name for name in columns if name in present]
    table: pa.Table = fragment.to_table(columns=columns, filter=where)
    return table


def concat(tables: Sequence[pa.Table], empty: pa.Schema) -> pa.Table:
    """Tables of segments as one, columns one lacks filled with nulls (``empty``: the schema of
    a result with no segments)."""
    if not tables:
        return empty.empty_table()
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowTypeError:
        # A column numeric in some segments and text in others (a number's pseudonym or mask,
        # once a personal-data rule covers it): read as text in all.
        return pa.concat_tables(_as_text(tables), promote_options="permissive")


def _as_text(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """``tables`` with each column that is text in one and a number (or bool) in another cast
    to text in all."""
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            kinds.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, types in kinds.items() if pa.string() in types and len(types) > 1}
    result = []
    for table in tables:
        for index, field in enumerate(table.schema):
            if field.name in mixed and field.type != pa.string():
                text = pc.cast(table.column(index), pa.string())
                table = table.set_column(index, field.name, text)
        result.append(table)
    return result


# The reader.


def read_predictions(
    home: Home,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: int | None = None,
    columns: Sequence[str] | None = None,
    cipher: Cipher | None = None,
    limit: int | None = None,
) -> pa.Table:
    """``model``'s logged rows with ``since <= time < until`` (naive datetimes are UTC), of one
    ``version`` if given, in time order; only ``columns`` (None: all; a column no segment has
    is left out). Reads only the day folders and segments that can hold such rows, and only the
    columns asked for. ``limit``: the newest ``limit`` rows only (read newest segment first, and
    no further than needed). ``cipher`` reads sealed segments (``log_cipher``)."""
    start, end = _aware(since), _aware(until)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    reads = wanted
    if wanted is not None and limit is not None and "time" not in wanted:
        reads = [*wanted, "time"]
    where = _where(start, end, version)
    folder = predictions_folder(home, model)

    def listing() -> list[tuple[int, Path]]:
        return _segments_between(folder, start, end)

    def read_all(found: list[tuple[int, Path]], read: Callable[[Path], pa.Table]) -> pa.Table:
        if limit is not None:
            return _newest(found, read, limit, _empty(reads))
        tables = [read(path) for _, path in found]
        return concat([t for t in tables if t.num_rows], _empty(wanted))

    def read_one(path: Path) -> pa.Table:
        return read_segment(path, reads, where, cipher)

    table = read_settled(listing, read_all, read_one)
    if "time" in table.column_names and table.num_rows > 1:
        table = table.sort_by("time")
    if wanted is not None and reads != wanted:
        table = table.drop_columns(["time"])
    return table


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _where(
    since: datetime | None, until: datetime | None, version: int | None
) -> pc.Expression | None:
    parts = []
    if since is not None:
        parts.append(pc.field("time") >= pa.scalar(since, TIME))
    if until is not None:
        parts.append(pc.field("time") < pa.scalar(until, TIME))
    if version is not None:
        parts.append(pc.field("version") == pa.scalar(version, pa.int32()))
    if not parts:
        return None
    where = parts[0]
    for part in parts[1:]:
        where = where & part
    return where


def _segments_between(
    folder: Path, since: datetime | None, until: datetime | None
) -> list[tuple[int, Path]]:
    """The segments to read of the day folders from ``since``'s day to ``until``'s, oldest
    first, less those whose rows are all older than ``since`` (by the number in their name)."""
    try:
        days = sorted(name for name in os.listdir(folder) if DAY_NAME.match(name))
    except FileNotFoundError:
        return []
    first = since.astimezone(UTC).strftime("%Y-%m-%d") if since is not None else ""
    last = until.astimezone(UTC).strftime("%Y-%m-%d") if until is not None else "9999"
    oldest = math.floor(since.timestamp() * 1000) if since is not None else -1
    found = itertools.chain.from_iterable(
        segments(folder / day) for day in days if first <= day <= last
    )
    return sorted(item for item in found if item[0] >= oldest)


def _newest(
    found: Sequence[tuple[int, Path]],
    read: Callable[[Path], pa.Table],
    limit: int,
    empty: pa.Schema,
) -> pa.Table:
    """The newest ``limit`` rows of ``found``: segments are read newest first until the next
    one's rows (no newer than its number) are all older than the ``limit`` kept."""
    kept: list[pa.Table] = []
    rows = 0
    oldest_kept: int | None = None  # microseconds
    for seq, path in reversed(found):
        if oldest_kept is not None and seq * 1000 < oldest_kept:
            break
        table = read(path)
        if not table.num_rows:
            continue
        kept.append(table)
        rows += table.num_rows
        if rows >= limit:
            merged = concat(kept, empty).sort_by("time").slice(rows - limit)
            kept, rows = [merged], limit
            oldest_kept = merged["time"][0].value
    return concat(kept, empty).sort_by("time").slice(max(0, rows - limit))


def _empty(columns: Sequence[str] | None) -> pa.Schema:
    """The schema of a result with no rows: the fixed columns asked for."""
    if columns is None:
        return BASE_SCHEMA
    return pa.schema([field for field in BASE_SCHEMA if field.name in columns])


# Export.


def encode_table(table: pa.Table, format: str) -> bytes:
    """``table`` as a file in ``format``: ``parquet``, ``csv`` (list values as JSON arrays) or
    ``json`` (an array of objects, times in ISO 8601)."""
    if format == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return bytes(sink.getvalue().to_pybytes())
    if format == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(_flat(table), sink)
        return bytes(sink.getvalue().to_pybytes())
    if format == "json":
        return orjson.dumps(table.to_pylist())
    raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def _flat(table: pa.Table) -> pa.Table:
    """``table`` with each list column as text (JSON arrays), which CSV can hold."""
    for index, field in enumerate(table.schema):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            text = pa.array(_json_texts(table.column(index).to_pylist()), pa.string())
            table = table.set_column(index, field.name, text)
    return table


def _json_texts(values: Iterable[Any]) -> list[str | None]:
    return [None if value is None else orjson.dumps(value).decode() for value in values]
