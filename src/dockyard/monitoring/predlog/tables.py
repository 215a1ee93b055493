"""A batch of queued requests (one model version's) as an Arrow table: the fixed columns, then a
column per tensor of the signature, split into rows.

Columns: ``request_id``, ``row`` (index within the request), ``time`` (when the answer was sent),
``principal``, ``model``, ``version``, ``latency_ms``, then ``input.<name>`` and ``output.<name>``
per tensor of the signature. A tabular model's ``[N, F]`` tensor is split into its features; a
tensor of one value per row is a scalar column, a wider one a list column (a classifier's
probabilities: ``list<double>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter

import numpy as np
import pyarrow as pa

from dockyard.datatypes import numpy_dtype
from dockyard.monitoring.predlog.layout import BASE_SCHEMA, TIME
from dockyard.monitoring.predlog.storage import concat
from dockyard.registry.records import ModelVersion, TensorSpec

INPUT = "input."
OUTPUT = "output."
LIST_OFFSETS_MAX = 2**31 - 1
INPUTS_OF, OUTPUTS_OF = itemgetter(6), itemgetter(7)

Entry = tuple[
    ModelVersion, str, str, float, float, int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]
]
"""What ``PredictionLog.append`` gathers and queues: version, request id, principal, seconds,
time, rows, inputs, outputs."""


def segment_table(entries: list[Entry]) -> pa.Table:
    """The rows of ``entries`` (one version) as a table; entries whose requests named different
    tensors (outputs asked for, one matrix or a tensor per feature) are built apart and joined,
    the columns one lacks left null."""
    inputs, outputs = entries[0][6].keys(), entries[0][7].keys()
    # Compared without keeping a key per entry: a list of N tuples alive while it is built
    # would trigger the collector over the whole queue, which costs more than the table.
    if all(entry[6].keys() == inputs and entry[7].keys() == outputs for entry in entries):
        return _table(entries)
    layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Entry]] = {}
    for entry in entries:
        layouts.setdefault((tuple(entry[6]), tuple(entry[7])), []).append(entry)
    return concat([_table(part) for part in layouts.values()], BASE_SCHEMA)


def _table(entries: list[Entry]) -> pa.Table:
    versions, ids, principals, seconds, times, rows, inputs, outputs = zip(*entries, strict=True)
    counts = np.asarray(rows, dtype=np.int64)
    return rows_table(
        versions[0],
        ids,
        principals,
        np.asarray(seconds, dtype=np.float64),
        np.asarray(times, dtype=np.float64),
        counts,
        inputs,
        outputs,
        counts,
    )


def rows_table(
    version: ModelVersion,
    ids: Sequence[str],
    principals: Sequence[str],
    seconds: np.ndarray,
    times: np.ndarray,
    counts: np.ndarray,
    inputs: Sequence[Mapping[str, np.ndarray]],
    outputs: Sequence[Mapping[str, np.ndarray]],
    pieces: np.ndarray,
) -> pa.Table:
    """The rows of requests of ``version``: per request its id, principal, seconds, time (both
    ``float64``) and ``counts`` of rows; their tensors in pieces of ``pieces`` rows each (a
    piece per request, as queued, or one for all, as ``columns.Block`` holds them), all with
    the same names."""
    total = int(counts.sum())
    index = None if total == len(ids) else np.repeat(np.arange(len(ids)), counts)

    def per_row(values: np.ndarray) -> np.ndarray:
        return values if index is None else values[index]

    def strings(values: Sequence[str]) -> pa.Array:
        array = pa.array(values, pa.string())
        return array if index is None else array.take(index)

    if index is None:
        row = np.zeros(total, dtype=np.int32)
    else:
        row = (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
    stamps = (times * 1e6).astype(np.int64)
    latency = seconds * 1000.0
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
    columns.update(_input_columns(signature.inputs, signature.tabular, inputs, pieces))
    specs = {spec.name: spec for spec in signature.outputs}
    for name in outputs[0]:
        column = _column(
            list(map(itemgetter(name), outputs)), pieces, specs.get(name), scalar=False
        )
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
