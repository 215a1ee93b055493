"""Requests copied into columns of bytes as they are answered (``Block``), so that the event loop
lets go of each request at once.

A queued request keeps its Python objects alive (dicts, arrays, its id: about a kilobyte) until
the writer thread builds its rows, and freeing them there, in another thread and out of the
order they were made, cost a worker about 3.5 µs a request at 64 connections
(``benchmarks/ANALYSIS.md``). A request whose tensors are all numbers, one row or more each
(``rows`` first), and no wider than ``COPY_ROW_BYTES`` a row is instead copied into the open block
of its model version, day and layout (names, dtypes and shapes past the first): one buffer copy
per tensor. The request is then freed by the loop that made it, while its memory is hot. Text,
scalars, arrays not C-contiguous, wide rows and requests past ``BLOCK_ROWS`` are queued by
reference, as before (``tables.Entry``): copying them would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from dockyard.monitoring.predlog.layout import DAY_S
from dockyard.monitoring.predlog.tables import Entry, rows_table
from dockyard.registry.records import ModelVersion

BLOCK_ROWS = 1024
"""Rows a block holds at most (a slice's worth: ``writer.SLICE_REQUESTS``)."""
BLOCK_BYTES = 1 << 20
"""Tensor bytes a block holds at most: fewer rows for wider ones."""
COPY_ROW_BYTES = 16 << 10
"""Tensor bytes a row may hold to be copied; a wider request is queued by reference."""
COPIED_KINDS = frozenset("biuf")
"""NumPy dtype kinds a block copies: booleans, integers and floats."""


Column = tuple[str, bytearray, np.dtype[Any], tuple[int, ...], int]
"""One tensor's column in a block: its name, its rows' bytes, its dtype, the shape of one
request's row of it and that row's bytes. Bytes are appended with ``bytearray.extend`` (a buffer
copy in the interpreter's own code) rather than assigned through a NumPy slice, which runs far
more of NumPy's code on every request."""


class Block:
    """Requests of one model version, UTC day and layout, copied into columns of at most
    ``capacity`` rows; filled by the event loop (``take``), then handed to the writer thread,
    which builds it (``table``) and never writes into it.

    ``take`` runs for every logged request, so the columns are one list (the inputs', then the
    outputs') checked and filled in one pass, and the day is a range of times: 0.6 µs a request,
    against 1.4 for a pass per mapping (``zip`` with ``strict``) and a division."""

    __slots__ = (
        "version",
        "day",
        "_starts",
        "_ends",
        "capacity",
        "columns",
        "_inputs",
        "_outputs",
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
        self._starts = day * DAY_S
        self._ends = self._starts + DAY_S
        self.capacity = capacity
        self.columns: list[Column] = [
            (name, bytearray(), array.dtype, (1, *array.shape[1:]), array.nbytes // len(array))
            for tensors in (inputs, outputs)
            for name, array in tensors.items()
        ]
        self._inputs = len(inputs)
        """How many of ``columns`` are inputs (the first ones)."""
        self._outputs = len(outputs)
        # Per request; lists, which take a value faster than an array does.
        self.ids: list[str] = []
        self.principals: list[str] = []
        self.seconds: list[float] = []
        self.times: list[float] = []
        self.counts: list[int] = []
        self.rows = 0

    @classmethod
    def open(cls, entry: Entry) -> Block | None:
        """A block for requests like this one (of its version, day and layout), or None when it
        is not copied: a tensor of text or objects, of no dimension or not as long as its rows,
        not C-contiguous, a row wider than ``COPY_ROW_BYTES``, more rows than a block holds."""
        version, _, _, _, now, rows, inputs, outputs = entry
        width = 0
        for tensors in (inputs, outputs):
            for array in tensors.values():
                if (
                    array.dtype.kind not in COPIED_KINDS
                    or array.shape[:1] != (rows,)
                    or not array.flags.c_contiguous
                ):
                    return None
                width += array.nbytes // rows
        if width > COPY_ROW_BYTES:
            return None
        capacity = min(BLOCK_ROWS, BLOCK_BYTES // max(width, 1))
        if rows > capacity:
            return None
        return cls(version, int(now // DAY_S), capacity, inputs, outputs)

    @property
    def requests(self) -> int:
        """The requests copied in."""
        return len(self.ids)

    def take(self, entry: Entry) -> bool:
        """Copy one answered request in; False (nothing taken) when it is not of this block's
        version, day and layout (tensor names in order, dtypes, shapes past the first), or does
        not fit."""
        version, request_id, principal, seconds, now, rows, inputs, outputs = entry
        end = self.rows + rows
        if (
            end > self.capacity
            or version is not self.version
            or not self._starts <= now < self._ends
            or len(inputs) != self._inputs
            or len(outputs) != self._outputs
        ):
            return False
        columns = self.columns
        copied = 0
        for tensors in (inputs, outputs):
            for name, array in tensors.items():
                own, column, dtype, one, _ = columns[copied]
                if (
                    name != own
                    or array.dtype != dtype
                    or array.shape != (one if rows == 1 else (rows, *one[1:]))
                ):
                    self._trim(copied)
                    return False
                try:
                    column.extend(array)  # its buffer, when C-contiguous
                except TypeError:  # not C-contiguous: no buffer of it as it lies
                    self._trim(copied)
                    return False
                copied += 1
        self.ids.append(request_id)
        self.principals.append(principal)
        self.seconds.append(seconds)
        self.times.append(now)
        self.counts.append(rows)
        self.rows = end
        return True

    def _trim(self, copied: int) -> None:
        """Drop what a request that did not fit copied into the first ``copied`` columns."""
        for _, column, _, _, width in self.columns[:copied]:
            del column[self.rows * width :]

    @property
    def newest(self) -> float:
        """The time of its newest row (seconds, UTC)."""
        return max(self.times)

    def table(self) -> pa.Table:
        """Its rows, as ``tables.segment_table`` builds the same requests queued by reference."""
        rows = self.rows
        inputs = self.columns[: self._inputs]
        outputs = self.columns[self._inputs :]
        return rows_table(
            self.version,
            self.ids,
            self.principals,
            np.asarray(self.seconds, dtype=np.float64),
            np.asarray(self.times, dtype=np.float64),
            np.asarray(self.counts, dtype=np.int64),
            [_arrays(inputs, rows)],
            [_arrays(outputs, rows)],
            np.array([rows], dtype=np.int64),
        )


def _arrays(columns: list[Column], rows: int) -> dict[str, np.ndarray]:
    """``columns`` as arrays of ``rows`` rows over their bytes (no copy)."""
    return {
        name: np.frombuffer(column, dtype).reshape(rows, *one[1:])
        for name, column, dtype, one, _ in columns
    }
