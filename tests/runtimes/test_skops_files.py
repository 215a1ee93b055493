"""Reading skops files within bounds: crafted zips are refused before they inflate."""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from dockyard.errors import InvalidInput
from dockyard.runtimes import sklearn
from dockyard.runtimes.base import LoadOptions
from dockyard.runtimes.skops_files import MAX_MODEL_BYTES

SKOPS = LoadOptions(format="skops")
BOMB_BYTES = 80 * 2**20
"""More than MAX_SCHEMA_BYTES, small enough to deflate in a test (80 MiB of spaces: 80 KB)."""


@pytest.fixture
def model_members(features: np.ndarray, labels: np.ndarray) -> dict[str, bytes]:
    """The members of a real skops file of a fitted logistic regression."""
    archive = zipfile.ZipFile(
        io.BytesIO(skops.io.dumps(LogisticRegression().fit(features, labels)))
    )
    return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, members: Mapping[str, bytes], padding: Mapping[str, int] = {}) -> Path:
    """A deflated zip of ``members``; each ``padding`` member gets that many trailing spaces,
    streamed so the test never holds them."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members.items():
            with archive.open(name, "w") as member:
                member.write(data)
                for _ in range(padding.get(name, 0) // 2**20):
                    member.write(b" " * 2**20)
    return path


def declaring(path: Path, sizes: Mapping[str, int]) -> Path:
    """Rewrite the zip's central directory so it declares ``sizes`` (inflated bytes) for the named
    members, whatever they really hold: what a crafted file can claim."""
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    count, _, offset = struct.unpack_from("<HII", data, end + 10)
    for _ in range(count):
        assert data[offset : offset + 4] == b"PK\x01\x02"
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        name = data[offset + 46 : offset + 46 + name_length].decode()
        if name in sizes:
            struct.pack_into("<I", data, offset + 24, sizes[name])
        offset += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(data))
    return path


def test_a_schema_that_inflates_past_the_limit_is_refused_at_once(
    model_members: dict[str, bytes], tmp_path: Path
) -> None:
    """A real model's schema.json followed by 80 MiB of spaces (still valid JSON), ~100 KB on
    disk: refused from the zip's directory, before a byte of it is inflated."""
    path = write_zip(tmp_path / "model.skops", model_members, {"schema.json": BOMB_BYTES})
    assert path.stat().st_size < 200_000

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="MAX_SCHEMA_BYTES") as refused:
        sklearn.load(path, SKOPS)

    assert time.monotonic() - started < 1.0
    inflated = len(model_members["schema.json"]) + BOMB_BYTES
    assert f"schema.json inflates to {inflated:,} bytes" in str(refused.value)


def test_a_member_never_inflates_past_its_declared_size(
    model_members: dict[str, bytes], tmp_path: Path
) -> None:
    """The same bomb declaring a small size: zipfile stops there and the CRC check fails."""
    real_size = len(model_members["schema.json"])
    path = write_zip(tmp_path / "model.skops", model_members, {"schema.json": BOMB_BYTES})
    declaring(path, {"schema.json": real_size})

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="BadZipFile"):
        sklearn.load(path, SKOPS)

    assert time.monotonic() - started < 1.0


def test_members_that_together_inflate_past_the_limit_are_refused(
    model_members: dict[str, bytes], tmp_path: Path
) -> None:
    members = {**model_members, "pad-1.bin": b"x", "pad-2.bin": b"x"}
    path = write_zip(tmp_path / "model.skops", members)
    declaring(path, {"pad-1.bin": MAX_MODEL_BYTES // 2 + 1, "pad-2.bin": MAX_MODEL_BYTES // 2 + 1})

    with pytest.raises(InvalidInput, match="MAX_MODEL_BYTES"):
        sklearn.load(path, SKOPS)


def test_a_member_counts_each_time_a_node_reads_it(tmp_path: Path) -> None:
    """skops inflates a member once per node naming it: 300 arrays on one 16 MiB member would
    hold 4.8 GiB, from a file of a few kilobytes."""
    array = io.BytesIO()
    np.save(array, np.zeros(2**21))
    node = {"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode"}
    node |= {"type": "numpy", "file": "zeros.npy"}
    schema = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode"}
    schema |= {"content": [node] * 300, "protocol": 2, "_skops_version": skops.__version__}
    members = {"schema.json": json.dumps(schema).encode(), "zeros.npy": array.getvalue()}
    path = write_zip(tmp_path / "model.skops", members)

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="read 300 times"):
        sklearn.load(path, SKOPS)

    assert time.monotonic() - started < 1.0


def test_a_nested_npz_is_checked_too(model_members: dict[str, bytes], tmp_path: Path) -> None:
    """A sparse matrix is an ``.npz`` (a zip) inside the skops zip; its members count as well."""
    nested = write_zip(tmp_path / "matrix.npz", {"data.npy": b"x", "indices.npy": b"x"})
    declaring(nested, {"data.npy": MAX_MODEL_BYTES // 2 + 1, "indices.npy": MAX_MODEL_BYTES // 2})
    members = {**model_members, "1.npz": nested.read_bytes()}
    path = write_zip(tmp_path / "model.skops", members)

    with pytest.raises(InvalidInput, match="MAX_MODEL_BYTES"):
        sklearn.load(path, SKOPS)


@pytest.mark.parametrize(
    ("members", "message"),
    [(None, "not a zip archive"), ({"other.json": b"{}"}, "has no schema.json")],
    ids=["not-a-zip", "no-schema"],
)
def test_what_is_not_a_skops_file_is_refused(
    members: dict[str, bytes] | None, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.skops"
    if members is None:
        path.write_bytes(b"not a zip at all")
    else:
        write_zip(path, members)

    with pytest.raises(InvalidInput, match=message):
        sklearn.load(path, SKOPS)


def test_a_real_model_still_loads(
    model_members: dict[str, bytes], features: np.ndarray, tmp_path: Path
) -> None:
    path = write_zip(tmp_path / "model.skops", model_members)
    runtime = sklearn.load(path, SKOPS)
    assert runtime.predict(features, ["predict"])["predict"].shape == (len(features),)
