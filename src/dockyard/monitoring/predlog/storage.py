"""Segment files: written beside their final name and linked into place, listed, and read one at
a time, or as all of a listing that held still while it was read.

A worker writes one segment per flush for each version and day it logged, ``<pid>-<seq>``:
``seq`` is at least the newest row's time in milliseconds (and unique in the process), so a reader
skips a segment older than its window by its name alone. Segments are written beside their final
name and linked into place, never overwriting one: a reader never sees half a file.

Encryption: when the ``encryption_key`` setting is set, segments are sealed with it
(``.parquet.sealed``: AES-256-GCM over the whole file, bound to its name) and readers need the same
key. Without the setting they are plain Parquet (mode 0600, in 0700 folders): analysis tools can
read them, which is the point of the format.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dockyard.encryption import Cipher
from dockyard.errors import DockyardError
from dockyard.home import DIR_MODE, SECRET_FILE_MODE

Result = TypeVar("Result")

PARQUET = ".parquet"
SEALED = ".sealed"
SEGMENT_NAME = re.compile(r"^(\d+)-(\d+)(?:-(\d+))?\.parquet(\.sealed)?$")
"""``<pid>-<seq>``, or a merged segment ``<pid>-<first>-<last>``."""
READ_ATTEMPTS = 20
"""Listings a read tries before giving up on a folder that never stops changing."""
LOW_CARDINALITY = ["principal", "model"]
"""Columns dictionary-encoded in segments (dictionaries on numbers cost 8x the write time)."""
STATISTICS = ["time", "version"]
"""Columns with statistics in segments: what readers filter on."""


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
    data = parquet(table)
    pid = os.getpid()
    seq = math.ceil(newest * 1000)
    while True:
        name = f"{pid}-{seq}{PARQUET}{SEALED if cipher else ''}"
        if publish(folder, name, data, cipher, durable=durable):
            return folder / name
        seq += 1


def parquet(table: pa.Table, row_group_size: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_size,
        use_dictionary=LOW_CARDINALITY,
        write_statistics=STATISTICS,
    )
    return bytes(sink.getvalue().to_pybytes())


def publish(folder: Path, name: str, data: bytes, cipher: Cipher | None, *, durable: bool) -> bool:
    """Write ``data`` (sealed to ``name`` with ``cipher``) beside ``folder / name`` and link it
    into place; False, writing nothing, when that name exists. ``durable``: the file and the
    folder entry are on disk before this returns (a merge deletes its originals next)."""
    path = folder / name
    temp = temp_file(path, data, cipher, durable=durable)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        sync_folder(folder)
    return True


def temp_file(path: Path, data: bytes, cipher: Cipher | None, *, durable: bool) -> Path:
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


def sync_folder(folder: Path) -> None:
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


def listing(folder: Path) -> list[Segment]:
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


def visible(found: Sequence[Segment]) -> list[Segment]:
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
    return [(segment.last, segment.path) for segment in visible(listing(folder))]


def unseal(path: Path, cipher: Cipher) -> bytes:
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
        fragment = file_format.make_fragment(pa.BufferReader(unseal(path, cipher)))
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
        return pa.concat_tables(_aligned(tables), promote_options="permissive")


def _aligned(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """``tables`` with the columns whose types no promotion joins made alike: a column text in
    one and a number (or bool) in another is text in all (a number's pseudonym or mask, once a
    personal-data rule covers it); one that is a value per row in one and a list in another
    (a tensor outside the signature, one wide in some requests and wider in others) is a list
    in all, each value a list of one; one that is booleans in one and numbers in another (an
    output outside the signature) is numbers in all, ``float64`` if any are floats."""
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            kinds.setdefault(field.name, set()).add(field.type)
    text = {name for name, types in kinds.items() if pa.string() in types and len(types) > 1}
    numbers = {
        name: pa.float64() if any(map(pa.types.is_floating, types)) else pa.int64()
        for name, types in kinds.items()
        if pa.bool_() in types and len(types) > 1 and all(map(_is_number, types))
    }
    lists = {
        name
        for name, types in kinds.items()
        if name not in text and any(map(_is_list, types)) and not all(map(_is_list, types))
    }
    result = []
    for table in tables:
        for index, field in enumerate(table.schema):
            if field.name in text and field.type != pa.string():
                column = pc.cast(table.column(index), pa.string())
            elif field.name in numbers and field.type == pa.bool_():
                column = pc.cast(table.column(index), numbers[field.name])
            elif field.name in lists and not _is_list(field.type):
                column = _lists_of_one(table.column(index))
            else:
                continue
            table = table.set_column(index, field.name, column)
        result.append(table)
    return result


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
    )


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _lists_of_one(column: pa.ChunkedArray) -> pa.Array:
    """Each value of ``column`` as a list holding it (a null stays null)."""
    values = column.combine_chunks()
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=values.is_null())
