"""Requests copied into preallocated columns as they are answered (``Block``), so that the event
loop lets go of each request at once.

A queued request keeps its Python objects alive (dicts, arrays, its id: about a kilobyte) until
the writer thread builds its rows, and freeing them there, in another thread and out of the
order they were made, cost a worker about 3.5 µs a request at 64 connections
(``benchmarks/ANALYSIS.md``). A request whose tensors are all numbers, one row or more each
(``rows`` first), and no wider than ``COPY_ROW_BYTES`` a row is instead copied into the open block
of its model version, day and layout (names, dtypes and shapes past the first): a few slice
assignments. The request is then freed by the loop that made it, while its memory is hot. Text,
scalars, wide rows and requests past ``BLOCK_ROWS`` are queued by reference, as before
(``tables.Entry``): copying them would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from dockyard.monitoring.predlog.tables import rows_table
from dockyard.registry.records import ModelVersion

BLOCK_ROWS = 1024
"""Rows a block holds at most (a slice's worth: ``writer.SLICE_REQUESTS``)."""
BLOCK_BYTES = 1 << 20
"""Tensor bytes a block holds at most: fewer rows for wider ones."""
COPY_ROW_BYTES = 16 << 10
"""Tensor bytes a row may hold to be copied; a wider request is queued by reference."""
COPIED_KINDS = frozenset("biuf")
"""NumPy dtype kinds a block copies: booleans, integers and floats."""


Layout = list[tuple[str, np.ndarray, tuple[int, ...]]]
"""A block's columns of inputs or outputs: each tensor's name, its column (``capacity`` rows), and
the shape of one request's row of it."""


class Block:
    """Requests of one model version, UTC day and layout, copied into columns of ``capacity``
    rows; filled by the event loop (``take``), then handed to the writer thread, which builds it
    (``table``) and never writes into it."""

    __slots__ = (
        "version",
        "day",
        "capacity",
        "inputs",
        "outputs",
        "ids",
        "principals",
        "seconds",
        "times",
        "counts",
        "rows",
    )

    def __init__(
        self,
        version: ModelVersion,
        day: int,
        capacity: int,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """An empty block for requests shaped like ``inputs`` and ``outputs``."""
        self.version = version
        self.day = day
        """The UTC day of its rows (days since the epoch)."""
        self.capacity = capacity
        self.inputs = _layout(capacity, inputs)
        self.outputs = _layout(capacity, outputs)
        # Per request; lists, which take a value faster than an array does.
        self.ids: list[str] = []
        self.principals: list[str] = []
        self.seconds: list[float] = []
        self.times: list[float] = []
        self.counts: list[int] = []
        self.rows = 0

    @classmethod
    def open(
        cls,
        version: ModelVersion,
        day: int,
        rows: int,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> Block | None:
        """A block for requests like this one (of ``rows`` rows), or None when it is not copied:
        a tensor of text or objects, of no dimension or not ``rows`` long, a row wider than
        ``COPY_ROW_BYTES``, more rows than a block holds."""
        width = 0
        for tensors in (inputs, outputs):
            for array in tensors.values():
                if array.dtype.kind not in COPIED_KINDS or array.shape[:1] != (rows,):
                    return None
                width += array.nbytes // rows
        if width > COPY_ROW_BYTES:
            return None
        capacity = min(BLOCK_ROWS, BLOCK_BYTES // max(width, 1))
        if rows > capacity:
            return None
        return cls(version, day, capacity, inputs, outputs)

    @property
    def requests(self) -> int:
        return len(self.ids)

    def take(
        self,
        version: ModelVersion,
        day: int,
        request_id: str,
        principal: str,
        seconds: float,
        now: float,
        rows: int,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> bool:
        """Copy one answered request in; False (nothing taken) when it is not of this block's
        version, day and layout, or does not fit."""
        start = self.rows
        end = start + rows
        if (
            end > self.capacity
            or version is not self.version
            or day != self.day
            or not _copy(inputs, self.inputs, start, end)
            or not _copy(outputs, self.outputs, start, end)
        ):
            return False
        self.ids.append(request_id)
        self.principals.append(principal)
        self.seconds.append(seconds)
        self.times.append(now)
        self.counts.append(rows)
        self.rows = end
        return True

    @property
    def newest(self) -> float:
        """The time of its newest row (seconds, UTC)."""
        return max(self.times)

    def table(self) -> pa.Table:
        """Its rows, as ``tables.segment_table`` builds the same requests queued by reference."""
        rows = self.rows
        return rows_table(
            self.version,
            self.ids,
            self.principals,
            np.asarray(self.seconds, dtype=np.float64),
            np.asarray(self.times, dtype=np.float64),
            np.asarray(self.counts, dtype=np.int64),
            [{name: column[:rows] for name, column, _ in self.inputs}],
            [{name: column[:rows] for name, column, _ in self.outputs}],
            np.array([rows], dtype=np.int64),
        )


def _layout(capacity: int, tensors: Mapping[str, np.ndarray]) -> Layout:
    return [
        (name, np.empty((capacity, *array.shape[1:]), dtype=array.dtype), (1, *array.shape[1:]))
        for name, array in tensors.items()
    ]


def _copy(tensors: Mapping[str, np.ndarray], layout: Layout, start: int, end: int) -> bool:
    """Copy ``tensors`` into ``layout``'s columns at rows ``start:end``; False at the first whose
    name (in order), dtype or shape differs from its column's (a dtype that differs would be
    cast by the copy, silently). What was copied before it lies past the block's rows, unread."""
    if len(tensors) != len(layout):
        return False
    rows = end - start
    for (name, array), (own, column, one) in zip(tensors.items(), layout, strict=True):
        if name != own or array.dtype != column.dtype:
            return False
        if array.shape != (one if rows == 1 else (rows, *one[1:])):
            return False
        column[start:end] = array
    return True
