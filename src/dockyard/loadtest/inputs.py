"""Request bodies for a load test: V2 JSON bodies, encoded once before the first stage.

They come from, in order of preference: a file the user gives (a V2 request body as is, or rows of
a ``.npy`` or ``.csv`` file), a Dockyard version's reference profile (values that look like the
model's real traffic), or the model's V2 metadata alone (random values of each input's datatype
and shape). Several distinct bodies are built, and the generator cycles through them, so a model
or cache that answers one repeated input faster is not measured on that input only.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.datatypes import FLOATS, NUMERIC, numpy_dtype
from dockyard.errors import InvalidInput

BODIES = 32
"""Distinct request bodies built from a profile, metadata or data file."""


@dataclass(frozen=True)
class InputSpec:
    """One input of the model as its V2 metadata describes it (``-1``: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def specs_from_metadata(metadata: Mapping[str, Any]) -> list[InputSpec]:
    """The inputs of ``GET /v2/models/{m}``'s answer; InvalidInput when it lists none."""
    try:
        specs = [
            InputSpec(
                str(item["name"]), str(item["datatype"]), tuple(int(d) for d in item["shape"])
            )
            for item in metadata.get("inputs") or []
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the model's V2 metadata has a malformed input: {exc}") from exc
    if not specs:
        raise InvalidInput(
            "the model's V2 metadata lists no inputs: give a request body with --input FILE"
        )
    return specs


def request_shape(spec: InputSpec, rows: int) -> list[int]:
    """The shape to send for ``rows`` rows: the first ``-1`` dimension is the rows, any other
    ``-1`` becomes 1."""
    shape = list(spec.shape) or [rows]
    if shape[0] == -1:
        shape[0] = rows
    return [1 if dim == -1 else dim for dim in shape]


def encode(tensors: Sequence[tuple[InputSpec, np.ndarray]]) -> bytes:
    """A V2 JSON request body of these tensors (row-major data)."""
    inputs = []
    for spec, array in tensors:
        if spec.datatype == "BYTES":
            data: list[Any] = [str(value) for value in array.reshape(-1).tolist()]
        else:
            data = array.reshape(-1).tolist()
        inputs.append(
            {"name": spec.name, "shape": list(array.shape), "datatype": spec.datatype, "data": data}
        )
    return json.dumps({"inputs": inputs}).encode()


def bodies_from_metadata(specs: Sequence[InputSpec], rows: int, seed: int = 0) -> list[bytes]:
    """Random bodies that fit the inputs' datatypes and shapes: numbers near zero, 0/1 booleans,
    short strings. A model may well refuse such values (a categorical input expecting its own
    categories); a profile or a file gives realistic ones."""
    rng = np.random.default_rng(seed)
    return [
        encode([(spec, _random(spec, request_shape(spec, rows), rng)) for spec in specs])
        for _ in range(BODIES)
    ]


def _random(spec: InputSpec, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if spec.datatype == "BYTES":
        return rng.choice(np.array(["a", "b", "c"], dtype=object), size=shape)
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if spec.datatype in FLOATS:
        return rng.normal(size=shape).round(6)
    if spec.datatype in NUMERIC:
        return rng.integers(0, 10, size=shape).astype(numpy_dtype(spec.datatype))
    raise InvalidInput(
        f"input {spec.name!r} has datatype {spec.datatype!r}, which no load can be generated for: "
        "give a request body with --input FILE"
    )


def bodies_from_profile(
    profile: Mapping[str, Any], specs: Sequence[InputSpec], rows: int, seed: int = 0
) -> list[bytes] | None:
    """Bodies whose values are drawn from a Dockyard reference profile (each numeric feature's
    sample, each categorical feature's listed values); None when the profile does not cover every
    input with one value per row (a tensor model's wide inputs are not profiled)."""
    features: Mapping[str, Any] = profile.get("features") or {}
    pools: list[tuple[InputSpec, list[Any]]] = []
    for spec in specs:
        entry = features.get(spec.name)
        if entry is None or len([d for d in spec.shape if d != 1]) > 1:
            return None
        pool = entry.get("sample") if entry.get("kind") == "numeric" else entry.get("values")
        if not pool:
            return None
        pools.append((spec, list(pool)))
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(BODIES):
        tensors = []
        for spec, pool in pools:
            picked = [pool[i] for i in rng.integers(0, len(pool), size=rows)]
            tensors.append((spec, _typed(spec, picked, request_shape(spec, rows))))
        bodies.append(encode(tensors))
    return bodies


def _typed(spec: InputSpec, values: list[Any], shape: list[int]) -> np.ndarray:
    """``values`` (one per row) in the input's datatype and request shape."""
    if spec.datatype == "BYTES":
        return np.array([str(v) for v in values], dtype=object).reshape(shape)
    if spec.datatype == "BOOL":
        return np.array([str(v) in ("True", "1", "1.0", "true") for v in values]).reshape(shape)
    try:
        return (
            np.array([float(v) for v in values]).astype(numpy_dtype(spec.datatype)).reshape(shape)
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {spec.name!r}: a value is not a {spec.datatype}: {exc}") from exc


def bodies_from_file(path: Path, specs: Sequence[InputSpec], rows: int) -> list[bytes]:
    """Bodies from ``path``: a ``.json`` V2 request body (sent as is), or the rows of a ``.npy``
    or ``.csv`` file, ``rows`` at a time, cycling through the file. A CSV whose first line names
    the inputs is matched by name, else by position."""
    if not path.is_file():
        raise InvalidInput(f"--input {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return [_json_body(path)]
    if suffix == ".npy":
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--input {path} is not a readable .npy array: {exc}") from exc
        names: list[str] | None = None
    elif suffix == ".csv":
        names, table = _read_csv(path)
    else:
        raise InvalidInput(f"--input {path}: give a .json V2 request body, a .npy or a .csv file")
    return _bodies_from_table(path, table, names, specs, rows)


def _json_body(path: Path) -> bytes:
    raw = path.read_bytes()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"--input {path} is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InvalidInput(f'--input {path} is not a V2 request body ({{"inputs": [...]}})')
    return raw


def _read_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    with path.open(newline="") as handle:
        lines = [line for line in csv.reader(handle) if line]
    if not lines:
        raise InvalidInput(f"--input {path} has no rows")
    names = None
    try:
        [float(cell) for cell in lines[0]]
    except ValueError:
        names, lines = [cell.strip() for cell in lines[0]], lines[1:]
    try:
        table = np.array([[float(cell) for cell in line] for line in lines], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInput(f"--input {path}: every value must be a number: {exc}") from exc
    if table.ndim != 2 or not len(table):
        raise InvalidInput(f"--input {path} has no rows of equal length")
    return names, table


def _bodies_from_table(
    path: Path,
    table: np.ndarray,
    names: list[str] | None,
    specs: Sequence[InputSpec],
    rows: int,
) -> list[bytes]:
    """Bodies of ``rows`` rows of ``table``: one column per input of a tabular model (each input
    ``[-1]``), or the whole row as the one input of a tensor model."""
    if table.ndim == 1:
        table = table.reshape(-1, 1)
    count = min(BODIES, max(1, len(table) // rows))
    bodies = []
    for index in range(count):
        picked = np.take(table, range(index * rows, index * rows + rows), axis=0, mode="wrap")
        bodies.append(encode(_tensors(path, picked, names, specs, rows)))
    return bodies


def _tensors(
    path: Path, rows_of: np.ndarray, names: list[str] | None, specs: Sequence[InputSpec], rows: int
) -> list[tuple[InputSpec, np.ndarray]]:
    width = int(np.prod(rows_of.shape[1:]))
    if len(specs) == 1 and (len(specs[0].shape) != 1 or width == 1):
        spec = specs[0]
        return [(spec, rows_of.astype(numpy_dtype(spec.datatype)))]
    if width != len(specs):
        raise InvalidInput(
            f"--input {path} has {width} columns but the model takes {len(specs)} inputs "
            f"({', '.join(spec.name for spec in specs[:5])}{', ...' if len(specs) > 5 else ''})"
        )
    columns = {name: i for i, name in enumerate(names)} if names else {}
    tensors = []
    for position, spec in enumerate(specs):
        if names and spec.name not in columns:
            raise InvalidInput(f"--input {path} has no column named {spec.name!r}")
        column = rows_of[:, columns[spec.name] if names else position]
        tensors.append((spec, _typed(spec, column.tolist(), request_shape(spec, rows))))
    return tensors
