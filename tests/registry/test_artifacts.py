"""LocalArtifactStore: content addressing, atomic writes, verification on every read."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from dockyard.errors import ArtifactCorrupt, InvalidInput
from dockyard.registry.artifacts import ArtifactStore, LocalArtifactStore

CONTENT = b"model bytes \x00\x01\x02"


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.skops"
    path.write_bytes(CONTENT)
    return path


def test_put_stores_by_sha256(artifacts: LocalArtifactStore, source: Path) -> None:
    store: ArtifactStore = artifacts

    digest = store.put(source)

    assert digest == hashlib.sha256(CONTENT).hexdigest()
    path = store.verified_path(digest)
    assert path == artifacts.root / digest[:2] / digest
    assert path.read_bytes() == CONTENT
    assert store.exists(digest)
    assert store.digests() == {digest}


def test_blobs_are_private(artifacts: LocalArtifactStore, source: Path) -> None:
    path = artifacts.verified_path(artifacts.put(source))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_identical_content_is_stored_once(
    artifacts: LocalArtifactStore, source: Path, tmp_path: Path
) -> None:
    digest = artifacts.put(source)
    blob = artifacts.verified_path(digest)
    before = blob.stat()
    copy = tmp_path / "copy.bin"
    copy.write_bytes(CONTENT)

    assert artifacts.put(copy) == digest
    after = blob.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in blob.parent.iterdir()) == [digest]


def test_large_files_hash_in_chunks(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    content = os.urandom(2 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(content)

    digest = artifacts.put(path)

    assert digest == hashlib.sha256(content).hexdigest()
    assert artifacts.verified_path(digest).read_bytes() == content


def test_corruption_is_detected_naming_both_digests(
    artifacts: LocalArtifactStore, source: Path
) -> None:
    digest = artifacts.put(source)
    blob = artifacts.verified_path(digest)
    flipped = bytearray(CONTENT)
    flipped[3] ^= 0xFF
    blob.write_bytes(bytes(flipped))
    actual = hashlib.sha256(bytes(flipped)).hexdigest()

    with pytest.raises(ArtifactCorrupt) as caught:
        artifacts.verified_path(digest)

    error = caught.value
    assert (error.path, error.expected, error.actual) == (str(blob), digest, actual)
    assert digest in str(error)
    assert actual in str(error)


def test_putting_again_repairs_a_corrupt_blob(artifacts: LocalArtifactStore, source: Path) -> None:
    digest = artifacts.put(source)
    artifacts.verified_path(digest).write_bytes(b"garbage")

    assert artifacts.put(source) == digest
    assert artifacts.verified_path(digest).read_bytes() == CONTENT


def test_missing_blob_is_reported_as_corrupt(artifacts: LocalArtifactStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()

    with pytest.raises(ArtifactCorrupt, match="found missing") as caught:
        artifacts.verified_path(digest)
    assert caught.value.actual == "missing"
    assert not artifacts.exists(digest)


@pytest.mark.parametrize(
    "digest",
    ["abc", "AB" * 32, "../" * 21 + "a", "g" * 64, "a" * 65, ""],
    ids=["short", "uppercase", "traversal", "not-hex", "long", "empty"],
)
def test_invalid_digests_are_refused(artifacts: LocalArtifactStore, digest: str) -> None:
    for call in (artifacts.verified_path, artifacts.exists, artifacts.path_for):
        with pytest.raises(InvalidInput, match="invalid artifact digest"):
            call(digest)


def test_digests_ignore_temporary_and_stray_files(
    artifacts: LocalArtifactStore, source: Path
) -> None:
    digest = artifacts.put(source)
    folder = artifacts.root / digest[:2]
    (folder / ".tmp-abandoned").write_bytes(b"partial")
    (artifacts.root / "README").write_text("stray")
    other = "cd" * 32
    (folder / other).write_bytes(b"in the wrong folder")

    assert artifacts.digests() == {digest}


def test_empty_store_has_no_digests(artifacts: LocalArtifactStore) -> None:
    assert artifacts.digests() == set()


def test_put_refuses_folders_and_missing_files(
    artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="is a folder"):
        artifacts.put(tmp_path)
    with pytest.raises(InvalidInput, match="cannot read artifact source"):
        artifacts.put(tmp_path / "nowhere.bin")
    assert artifacts.digests() == set()


def test_stale_temp_files_of_gone_writers_are_removed(
    artifacts: LocalArtifactStore, source: Path
) -> None:
    digest = artifacts.put(source)
    folder = artifacts.root / digest[:2]
    mine = folder / f".tmp-{os.getpid()}-abc"
    gone = folder / ".tmp-999999999-abc"
    legacy = folder / ".tmp-k3j_x9q1"
    for path in (mine, gone, legacy):
        path.write_bytes(b"partial")

    removed = artifacts.remove_stale_temps(is_alive=lambda pid: pid == os.getpid())

    assert sorted(removed) == sorted([gone, legacy])
    assert mine.exists()
    assert artifacts.digests() == {digest}


def test_remove_deletes_a_blob_and_put_takes_a_known_digest(
    artifacts: LocalArtifactStore, source: Path
) -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert artifacts.put(source, digest) == digest
    artifacts.remove(digest)
    artifacts.remove(digest)
    assert not artifacts.exists(digest)
    with pytest.raises(InvalidInput, match="changed while it was being copied"):
        artifacts.put(source, "ab" * 32)
    assert list(artifacts.root.glob("??/.tmp*")) == []
