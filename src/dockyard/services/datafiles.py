"""Reading and writing the data files users hand the CLI: CSV, JSON, Parquet and ``.npy``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dockyard.errors import InvalidInput, MissingExtra

SUFFIXES = (".csv", ".json", ".parquet", ".npy")
OUTPUT_SUFFIXES = (".csv", ".json", ".parquet")
# Parquet pages inflate to what their headers claim, so an upload of a few kilobytes could ask
# for gigabytes: files that arrive over the network are read only in the other formats.
UPLOAD_SUFFIXES = (".csv", ".json", ".npy")
NPY_MAGIC = b"\x93NUMPY"


def read_columns(path: Path, suffixes: tuple[str, ...] = SUFFIXES) -> dict[str, np.ndarray]:
    """A data file as named columns (CSV, JSON, Parquet) or one ``input-0`` array (``.npy``),
    of one of the file types ``suffixes`` allows."""
    if not path.is_file():
        raise InvalidInput(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise InvalidInput(
            f"unsupported file type {path.suffix!r} for {path}; use {', '.join(suffixes)}"
        )
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        return {"input-0": _read_npy(path)}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, read no further than the file holds.

    ``np.load`` opens a zip under any name as an ``.npz`` whose members inflate only when read, so
    a "``.npy``" that is an archive could inflate without bound later: it is refused. The array is
    mapped first, which refuses a header that declares more data than the file holds (numpy would
    otherwise allocate what the header says), then copied.
    """
    with path.open("rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise InvalidInput(
                f"{path} is not a .npy file (it does not start with numpy's magic string); "
                "an .npz or other archive is not read"
            )
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False))


def _column(values: list[Any]) -> np.ndarray:
    """Numbers become an int64 or float64 column (empty cells NaN), anything else strings."""
    cleaned = [None if value in ("", None) else value for value in values]
    try:
        floats = np.array([np.nan if v is None else v for v in cleaned], dtype=np.float64)
    except (TypeError, ValueError):
        return np.array(["" if v is None else str(v) for v in cleaned], dtype=object)
    is_whole = not np.isnan(floats).any() and np.all(np.mod(floats, 1) == 0)
    if is_whole and all(not isinstance(v, str) or "." not in v for v in cleaned):
        return floats.astype(np.int64)
    return floats


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise InvalidInput(f"{path} is empty; expected a header row of feature names")
        rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InvalidInput(f"{path} line {number}: {len(row)} values for {len(header)} columns")
    return {name: _column([row[i] for row in rows]) for i, name in enumerate(header)}


def _pyarrow() -> Any:
    """pyarrow with its Parquet module, imported when a Parquet file is read or written."""
    import pyarrow
    import pyarrow.parquet

    return pyarrow


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns keep their Parquet type (nulls become NaN); others read as CSV cells do."""
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"cannot read {path} as Parquet: {exc}") from exc
    columns: dict[str, np.ndarray] = {}
    for field in table.schema:
        values = table.column(field.name)
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        if numeric:
            columns[field.name] = np.asarray(values.to_numpy(zero_copy_only=False))
        else:
            columns[field.name] = _column(values.to_pylist())
    return columns


def _read_json(path: Path) -> dict[str, np.ndarray]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, Mapping) and "instances" in data:
        data = data["instances"]
    if isinstance(data, list) and data and all(isinstance(row, Mapping) for row in data):
        names = list(data[0])
        for number, row in enumerate(data):
            if list(row) != names:
                raise InvalidInput(
                    f"{path}: record {number} has keys {list(row)}, expected {names}"
                )
        return {name: _column([row[name] for row in data]) for name in names}
    if isinstance(data, list):
        return {"input-0": np.asarray(data)}
    if isinstance(data, Mapping):
        return {str(name): _column(list(values)) for name, values in data.items()}
    raise InvalidInput(
        f"{path}: expected a list of records, a list of rows or an object of columns"
    )


def check_output(path: Path) -> None:
    """Refuse, before any scoring, an output Dockyard cannot write: another file type, or a
    folder that does not exist."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidInput(
            f"cannot write {path}: unsupported file type {path.suffix!r}; "
            f"use {', '.join(OUTPUT_SUFFIXES)}"
        )
    if not path.parent.is_dir():
        raise InvalidInput(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InvalidInput(f"cannot write {path}: it is a folder")


def write_outputs(outputs: Mapping[str, np.ndarray], path: Path | None) -> None:
    """Write predictions as CSV (one column per output value), JSON (a list of records) or
    Parquet (the same columns); ``path`` None means CSV on standard output."""
    rows = len(next(iter(outputs.values()))) if outputs else 0
    columns: dict[str, np.ndarray] = {}
    for name, values in outputs.items():
        flat = values.reshape(rows, -1) if values.ndim > 1 else values.reshape(rows, 1)
        if flat.shape[1] == 1:
            columns[name] = flat[:, 0]
        else:
            for i in range(flat.shape[1]):
                columns[f"{name}_{i}"] = flat[:, i]
    if path is None:
        _write_csv(columns, rows, sys.stdout)
        return
    check_output(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            _write_parquet(columns, path)
        elif suffix == ".json":
            path.write_text(json.dumps(_records(columns, rows)) + "\n", encoding="utf-8")
        else:
            with path.open("w", newline="", encoding="utf-8") as handle:
                _write_csv(columns, rows, handle)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc


def _records(columns: Mapping[str, np.ndarray], rows: int) -> list[dict[str, Any]]:
    return [{name: _plain(values[i]) for name, values in columns.items()} for i in range(rows)]


def _write_csv(columns: Mapping[str, np.ndarray], rows: int, handle: TextIO) -> None:
    writer = csv.DictWriter(handle, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(_records(columns, rows))


def _write_parquet(columns: Mapping[str, np.ndarray], path: Path) -> None:
    pa = _pyarrow()
    table = pa.table(
        {
            name: values.astype(str) if values.dtype == object else values
            for name, values in columns.items()
        }
    )
    pa.parquet.write_table(table, path)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def as_reference(columns: Mapping[str, np.ndarray]) -> tuple[Any, list[str] | None]:
    """Reference data from a file's columns: a 2-D array with feature names when every column is
    numeric, a pandas DataFrame when one holds strings, the array itself for ``.npy`` files."""
    if list(columns) == ["input-0"]:
        return columns["input-0"], None
    names = list(columns)
    if all(values.dtype.kind in "biuf" for values in columns.values()):
        return np.column_stack([columns[name] for name in names]), names
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingExtra("pandas (for reference data with text columns)", "pandas") from exc
    return pd.DataFrame(dict(columns)), None
