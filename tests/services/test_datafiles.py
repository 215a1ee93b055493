"""Reading the data files users hand the CLI and the API: no archive inflates behind a name."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dockyard.errors import InvalidInput
from dockyard.services.datafiles import read_columns


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
