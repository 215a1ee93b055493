"""Reading the data files users hand the CLI and the API: no archive inflates behind a name."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dockyard.errors import InvalidInput
from dockyard.services.datafiles import UPLOAD_SUFFIXES, check_output, read_columns, write_outputs


def test_a_npy_file_is_read(tmp_path: Path) -> None:
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "rows.npy", rows)

    columns = read_columns(tmp_path / "rows.npy")

    assert list(columns) == ["input-0"]
    assert type(columns["input-0"]) is np.ndarray
    np.testing.assert_array_equal(columns["input-0"], rows)


def test_an_archive_named_npy_is_refused(tmp_path: Path) -> None:
    """numpy opens any zip as an ``.npz`` whose members inflate when first read: a few hundred
    kilobytes named ``reference.npy`` could hold gigabytes of zeros."""
    path = tmp_path / "reference.npy"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("rows.npy", "w") as member,
    ):
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f8", "fortran_order": False, "shape": (8 * 2**20,)}
        )
        for _ in range(64):
            member.write(bytes(2**20))

    with pytest.raises(InvalidInput, match="not a .npy file"):
        read_columns(path)


def test_a_header_declaring_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    """A header declaring 7 TiB over 64 bytes of data: refused, nothing allocated for it."""
    path = tmp_path / "rows.npy"
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
        )
        handle.write(bytes(64))

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="cannot read"):
        read_columns(path)
    assert time.monotonic() - started < 1.0


def test_predictions_round_trip_through_parquet(tmp_path: Path) -> None:
    path = tmp_path / "scores.parquet"
    outputs = {
        "label": np.array([0, 1, 1]),
        "probabilities": np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]),
        "name": np.array(["a", "b", "c"], dtype=object),
    }

    write_outputs(outputs, path)

    assert path.read_bytes()[:4] == b"PAR1"  # a real Parquet file, not CSV text
    columns = read_columns(path)
    assert list(columns) == ["label", "probabilities_0", "probabilities_1", "name"]
    np.testing.assert_array_equal(columns["label"], [0, 1, 1])
    assert columns["label"].dtype == np.int64
    np.testing.assert_array_equal(columns["probabilities_1"], [0.1, 0.8, 0.6])
    assert list(columns["name"]) == ["a", "b", "c"]


def test_parquet_nulls_read_as_missing_values(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x": [1.5, None], "city": ["Oslo", None]}), path)

    columns = read_columns(path)

    assert np.isnan(columns["x"][1])
    assert list(columns["city"]) == ["Oslo", ""]


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_text("a,b\n1,2\n")

    with pytest.raises(InvalidInput, match=r"cannot read .*rows.parquet as Parquet"):
        read_columns(path)


def test_uploads_are_not_read_as_parquet(tmp_path: Path) -> None:
    """What arrives over the network is read only in formats whose size is what arrived."""
    path = tmp_path / "reference.parquet"
    write_outputs({"x": np.array([1.0, 2.0])}, path)

    with pytest.raises(InvalidInput, match=r"unsupported file type '.parquet'.*\.csv, \.json"):
        read_columns(path, UPLOAD_SUFFIXES)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("out.xlsx", r"cannot write .*out.xlsx: unsupported file type '.xlsx'; use .csv"),
        ("missing/out.csv", r"cannot write .*out.csv: folder .*missing does not exist"),
    ],
)
def test_an_output_dockyard_cannot_write_is_refused(
    tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_output(tmp_path / name)
    with pytest.raises(InvalidInput, match=message):
        write_outputs({"x": np.array([1])}, tmp_path / name)
    assert not (tmp_path / name).exists()
