"""Rewrites of written segments: retention's purge of old rows and a data subject's erasure.

Both remove rows from written segments: holding the model folder's ``REWRITE_LOCK`` exclusively
(each compaction takes it shared, and skips the folder while a rewrite holds it), they replace a
segment by its remaining rows (a fsynced file renamed over it) or delete it. Names do not change,
so the rules of ``compaction`` still hold; writers only ever create new files, so rows they write
meanwhile are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockyard.encryption import Cipher
from dockyard.errors import DockyardError, Unavailable
from dockyard.monitoring.predlog.compaction import (
    MERGED_ROW_GROUP,
    REWRITE_LOCK,
    compaction_lock,
    delete,
    drop_covered,
    remove_stale_temps,
)
from dockyard.monitoring.predlog.layout import DAY_NAME, DAY_S, TIME, day_name
from dockyard.monitoring.predlog.storage import (
    SEALED,
    listing,
    parquet,
    read_segment,
    sync_folder,
    temp_file,
    unseal,
    visible,
)

logger = logging.getLogger(__name__)

REWRITE_WAIT_S = 120.0
"""How long a rewrite waits for the compactions in progress before giving up."""
LOCK_POLL_S = 0.05


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
        listed = listing(day)
        drop_covered(listed)
        found += [segment.path for segment in visible(listed)]
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
        kept = parquet(table.filter(pc.invert(marked)), MERGED_ROW_GROUP)
        temp = temp_file(path, kept, cipher, durable=True)
        try:
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    sync_folder(path.parent)
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
    cut_day = day_name(cut // 1000 // DAY_S)
    stamp = pa.scalar(cutoff, TIME)
    older = pc.field("time") < stamp
    deleted = rows = 0
    with exclusive_lock(folder, lock):
        days = sorted(day for day in _days(folder) if day <= cut_day)
        for place in [folder, *(folder / day for day in days)]:
            listed = listing(place)
            drop_covered(listed)  # their rows are in the merged segment: not counted
            whole = place.name < cut_day and place != folder
            for segment in visible(listed):
                if whole or segment.last < cut:
                    rows += _row_count(segment.path, cipher)
                    deleted += delete([segment])
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
        return int(pq.read_metadata(pa.BufferReader(unseal(path, cipher))).num_rows)
    except FileNotFoundError:
        return 0


def _remove_day(folder: Path) -> None:
    """Delete a purged day folder, unless something is left in it: a writer's temporary file
    (rows of that day, purged by a later round once written, or once stale)."""
    remove_stale_temps(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()
