"""Request bodies: from a file, a reference profile, or the V2 metadata alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dockyard.errors import InvalidInput
from dockyard.loadtest.inputs import (
    InputSpec,
    bodies_from_file,
    bodies_from_metadata,
    bodies_from_profile,
    specs_from_metadata,
)

TABULAR = [InputSpec("age", "FP64", (-1,)), InputSpec("city", "BYTES", (-1,))]


def _decoded(body: bytes) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = json.loads(body)["inputs"]
    return {item["name"]: item for item in inputs}


def test_metadata_inputs_become_specs() -> None:
    metadata = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}
    assert specs_from_metadata(metadata) == [InputSpec("x", "FP32", (-1, 4))]
    with pytest.raises(InvalidInput, match="--input FILE"):
        specs_from_metadata({"inputs": []})


def test_bodies_from_metadata_fit_datatype_and_shape() -> None:
    specs = [InputSpec("x", "FP32", (-1, 4, -1)), InputSpec("flag", "BOOL", (-1,))]
    bodies = bodies_from_metadata(specs, rows=3)
    assert len(bodies) > 1
    tensors = _decoded(bodies[0])
    assert tensors["x"]["shape"] == [3, 4, 1]
    assert len(tensors["x"]["data"]) == 12
    assert tensors["flag"]["datatype"] == "BOOL"
    assert all(isinstance(value, bool) for value in tensors["flag"]["data"])


def test_bodies_from_a_profile_draw_its_values() -> None:
    profile = {
        "features": {
            "age": {"kind": "numeric", "sample": [18.0, 30.0, 65.0]},
            "city": {"kind": "categorical", "values": ["Oslo", "Lima"]},
        }
    }
    bodies = bodies_from_profile(profile, TABULAR, rows=4)
    assert bodies is not None
    for body in bodies:
        tensors = _decoded(body)
        assert tensors["age"]["shape"] == [4]
        assert set(tensors["age"]["data"]) <= {18.0, 30.0, 65.0}
        assert set(tensors["city"]["data"]) <= {"Oslo", "Lima"}


def test_a_profile_without_an_input_gives_no_bodies() -> None:
    profile = {"features": {"age": {"kind": "numeric", "sample": [1.0]}}}
    assert bodies_from_profile(profile, TABULAR, rows=1) is None


def test_a_json_body_is_sent_as_is(tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}')
    assert bodies_from_file(path, [], rows=1) == [path.read_bytes()]
    path.write_text('{"instances": [1]}')
    with pytest.raises(InvalidInput, match="not a V2 request body"):
        bodies_from_file(path, [], rows=1)


def test_csv_columns_are_matched_by_name(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("b,a\n1,10\n2,20\n3,30\n")
    specs = [InputSpec("a", "FP64", (-1,)), InputSpec("b", "INT64", (-1,))]
    bodies = bodies_from_file(path, specs, rows=2)
    first = _decoded(bodies[0])
    assert first["a"]["data"] == [10.0, 20.0]
    assert first["b"]["data"] == [1, 2]
    with pytest.raises(InvalidInput, match="no column named 'c'"):
        bodies_from_file(path, [InputSpec("c", "FP64", (-1,)), specs[1]], rows=1)


def test_npy_rows_feed_a_tensor_input(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(6, 2))
    bodies = bodies_from_file(path, [InputSpec("x", "FP32", (-1, 2))], rows=3)
    assert len(bodies) == 2
    assert _decoded(bodies[1])["x"] == {
        "name": "x",
        "shape": [3, 2],
        "datatype": "FP32",
        "data": [6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
    }


def test_a_file_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(InvalidInput, match="3 columns but the model takes 2 inputs"):
        bodies_from_file(path, TABULAR, rows=1)
