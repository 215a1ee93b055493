"""Reading the log: a model's rows in a time window, from only the day folders, segments and
columns that can hold them, and consistent while compactions merge and delete segments."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dockyard.encryption import Cipher
from dockyard.home import Home
from dockyard.monitoring.predlog.layout import BASE_SCHEMA, DAY_NAME, TIME, predictions_folder
from dockyard.monitoring.predlog.storage import concat, read_segment, read_settled, segments


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
    folder: Path | None = None,
) -> pa.Table:
    """``model``'s logged rows with ``since <= time < until`` (naive datetimes are UTC), of one
    ``version`` if given, in time order; only ``columns`` (None: all; a column no segment has
    is left out). Reads only the day folders and segments that can hold such rows, and only the
    columns asked for. ``limit``: the newest ``limit`` rows only (read newest segment first, and
    no further than needed). ``cipher`` reads sealed segments (``log_cipher``). ``folder``: the
    model's folder to read instead of the home's (another machine's, from ``predictions-cache``)."""
    start, end = _aware(since), _aware(until)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    reads = wanted
    if wanted is not None and limit is not None and "time" not in wanted:
        reads = [*wanted, "time"]
    where = _where(start, end, version)
    folder = predictions_folder(home, model) if folder is None else folder

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
