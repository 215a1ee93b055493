"""The log's rows as a file to hand out: Parquet, CSV (list values as JSON arrays) or JSON, for
``dockyard monitor log export`` and ``GET /api/models/{m}/predictions``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dockyard.errors import InvalidInput

FORMATS = ("csv", "json", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}
EXPORT_LIMIT = 100_000
"""Most rows one read of the log over HTTP answers with (``GET /api/models/{m}/predictions``)."""


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
