"""Compaction: a worker's small segments merged into few, in steps ordered so that no state of a
folder loses or duplicates a row, whoever reads it or dies meanwhile.

A busy server would leave one small segment per worker per second (86,400 a day), and
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
that is no longer alive on this host (a killed or replaced worker) are compacted by the home's
monitoring process (``sweep_orphans``, never a serving worker) once older than ``ORPHAN_AGE_S``,
under a lock file per model folder (``.compact.lock``) so only one does it at a time. Sealed
segments are read with the key and merged sealed; a compactor without the key leaves them as they
are. External tools reading the raw folders (DuckDB on ``*.parquet``) may see a merged segment and
its originals together for the instant between steps 1 and 2, or after a crash there; ``dockyard
monitor log export`` never does.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from dockyard.encryption import Cipher
from dockyard.home import SECRET_FILE_MODE, process_is_alive
from dockyard.monitoring.predlog.layout import BASE_SCHEMA, day_folders
from dockyard.monitoring.predlog.storage import (
    PARQUET,
    SEALED,
    Segment,
    concat,
    listing,
    parquet,
    publish,
    read_segment,
    visible,
)

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
COMPACT_AGE_S = 300.0
"""A worker merges its own segments once their ``seq`` is this old: well past any flush delay."""
ORPHAN_AGE_S = 3600.0
"""Segments of a pid not alive on this host are merged by another worker once this old."""
COMPACT_MAX_BYTES = 32 * 2**20
"""Largest input (bytes on disk) merged into one segment: bounds the compactor's memory."""
MERGED_ROW_GROUP = 65_536
"""Rows per row group of a merged segment: small enough for time filters to skip groups."""
STALE_TEMP_S = 3600.0
"""A temporary file this old was left by a killed writer: compaction removes it."""
LOCK_NAME = ".compact.lock"
REWRITE_LOCK = ".rewrite.lock"
"""Of a model's folder: taken shared by each compaction, exclusively by a purge or an erasure
rewriting its segments, so a merge never copies rows that are being removed."""


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
    orphans: bool = True,
    orphan_age_s: float = ORPHAN_AGE_S,
    max_bytes: int = COMPACT_MAX_BYTES,
) -> Compacted:
    """Compact one day folder: ``pid``'s segments (None: this process's) with ``seq`` older than
    ``age_s`` before ``now`` (seconds), and, with ``orphans`` and when the model folder's lock is
    free, those of pids not alive on this host older than ``orphan_age_s``. Segments of other
    live pids are never touched: only their writer knows what it is about to write."""
    own = os.getpid() if pid is None else pid
    removed = newest = 0
    with contextlib.ExitStack() as stack:
        if not stack.enter_context(compaction_lock(folder.parent, REWRITE_LOCK, shared=True)):
            return Compacted(0, 0)  # being purged or erased: the next round compacts
        found = listing(folder)
        pids = sorted({segment.pid for segment in found})
        dead = (
            [other for other in pids if other != own and not process_is_alive(other)]
            if orphans
            else []
        )
        if dead and not stack.enter_context(compaction_lock(folder.parent)):
            dead = []  # another worker is compacting them
        owners = [(own, age_s)] if own in pids else []
        owners += [(other, orphan_age_s) for other in dead]
        for owner, age in owners:
            mine = [segment for segment in found if segment.pid == owner]
            removed += drop_covered(mine)
            cut = math.floor((now - age) * 1000)
            for run in _runs(visible(mine), cut, max_bytes, cipher):
                try:
                    merged = merge_segments(folder, run, cipher)
                except FileNotFoundError:
                    continue  # compacted by someone else meanwhile
                except Exception:
                    logger.exception("prediction log: merging %d segments failed", len(run))
                    continue
                if merged is None:
                    continue
                removed += delete(run)
                if owner == own:
                    newest = max(newest, run[-1].last)
    remove_stale_temps(folder)
    return Compacted(removed, newest)


def sweep_orphans(root: Path, cipher: Cipher | None, *, now: float) -> int:
    """Merge the segments of pids no longer alive on this host, in every day folder of every
    model under ``root`` (the prediction log's folder); the segments removed. Run by the home's
    monitoring process, never by a serving worker: a restarted server finds up to an hour of each
    dead worker's one-a-second segments, seconds of merging that would hold a worker's GIL."""
    removed = 0
    for folder in day_folders(root):
        try:
            removed += compact_folder(folder, cipher, now=now).removed
        except Exception:
            logger.exception("prediction log: compacting %s failed", folder)
    return removed


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
    returns; None when that name exists (nothing written). The originals are left: ``delete``
    is step 2."""
    tables = [read_segment(segment.path, None, None, cipher) for segment in run]
    table = concat(tables, BASE_SCHEMA)
    name = f"{run[0].pid}-{run[0].first}-{run[-1].last}{PARQUET}{SEALED if cipher else ''}"
    data = parquet(table, MERGED_ROW_GROUP)
    return folder / name if publish(folder, name, data, cipher, durable=True) else None


def delete(found: Iterable[Segment]) -> int:
    count = 0
    for segment in found:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
            count += 1
    return count


def drop_covered(found: Sequence[Segment]) -> int:
    """Delete the segments a merged segment covers (a compaction killed before deleting them):
    readers already skip them."""
    shown = set(visible(found))
    return delete(segment for segment in found if segment not in shown)


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


def remove_stale_temps(folder: Path) -> None:
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
