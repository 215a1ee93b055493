"""S3ArtifactStore against a real S3 server (moto, on loopback): blobs stored once under
``<prefix>/<digest[:2]>/<digest>``, fetched into a verified cache, never handed out when their
bytes do not match, bounded in size and time."""

from __future__ import annotations

import hashlib
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.config import load_settings
from dockyard.errors import ArtifactCorrupt, DockyardError, InvalidInput, MissingExtra, Unavailable
from dockyard.home import Home
from dockyard.registry.artifacts import ArtifactStore
from dockyard.registry.s3_artifacts import S3ArtifactStore
from dockyard.services.workspace import open_artifacts
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401

CONTENT = b"model bytes \x00\x01\x02" * 100
DIGEST = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.skops"
    path.write_bytes(CONTENT)
    return path


def _store(bucket: Bucket, cache: Path) -> S3ArtifactStore:
    return S3ArtifactStore(bucket.url, cache, endpoint_url=bucket.endpoint)


@pytest.fixture
def store(bucket: Bucket, tmp_path: Path) -> S3ArtifactStore:
    return _store(bucket, tmp_path / "cache-a")


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden temporaries included."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_put_uploads_under_the_prefix_and_another_machine_fetches_it_verified(
    store: S3ArtifactStore, bucket: Bucket, source: Path, tmp_path: Path
) -> None:
    seam: ArtifactStore = store

    assert seam.put(source) == DIGEST

    head = bucket.client.head_object(Bucket=bucket.name, Key=bucket.key(DIGEST))
    assert head["Metadata"] == {"sha256": DIGEST, "size": str(len(CONTENT))}
    assert seam.exists(DIGEST)
    other = _store(bucket, tmp_path / "cache-b")
    path = other.verified_path(DIGEST)
    assert path == tmp_path / "cache-b" / DIGEST[:2] / DIGEST
    assert path.read_bytes() == CONTENT
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert other.verified_path(DIGEST) == path  # from the cache, re-hashed


def test_put_skips_an_object_stored_with_the_same_sha256_and_replaces_a_foreign_one(
    store: S3ArtifactStore, bucket: Bucket, source: Path
) -> None:
    key = bucket.key(DIGEST)
    marked = {"sha256": DIGEST, "size": str(len(CONTENT)), "marker": "kept"}
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=CONTENT, Metadata=marked)

    store.put(source)
    assert bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"] == marked

    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=CONTENT)  # no sha256 recorded
    store.put(source)
    assert bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"]["sha256"] == DIGEST


def test_a_corrupt_object_in_the_bucket_is_never_handed_out(
    store: S3ArtifactStore, bucket: Bucket, tmp_path: Path
) -> None:
    bad = bytearray(CONTENT)
    bad[7] ^= 0xFF
    metadata = {"sha256": DIGEST, "size": str(len(CONTENT))}
    bucket.client.put_object(
        Bucket=bucket.name, Key=bucket.key(DIGEST), Body=bytes(bad), Metadata=metadata
    )

    with pytest.raises(ArtifactCorrupt) as caught:
        store.verified_path(DIGEST)

    assert caught.value.actual == hashlib.sha256(bad).hexdigest()
    assert f"s3://{bucket.name}/{bucket.key(DIGEST)} is corrupt" in str(caught.value)
    assert _files(tmp_path / "cache-a") == []


def test_a_corrupt_cached_copy_is_fetched_again(
    store: S3ArtifactStore, source: Path, tmp_path: Path
) -> None:
    store.put(source)
    cached = tmp_path / "cache-a" / DIGEST[:2] / DIGEST
    data = bytearray(cached.read_bytes())
    data[3] ^= 0xFF
    cached.write_bytes(bytes(data))

    assert store.verified_path(DIGEST).read_bytes() == CONTENT
    assert _files(tmp_path / "cache-a") == [DIGEST]


def test_a_missing_blob_is_corrupt_as_missing(store: S3ArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupt, match="missing") as caught:
        store.verified_path(DIGEST)
    assert caught.value.actual == "missing"
    assert not store.exists(DIGEST)


def test_digests_lists_the_prefix_and_remove_deletes(
    store: S3ArtifactStore, bucket: Bucket, source: Path, tmp_path: Path
) -> None:
    second = tmp_path / "second.bin"
    second.write_bytes(b"another model")
    digests = {store.put(source), store.put(second)}
    for stray in ("team/models/README", "team/other/ab/" + "ab" * 32, "team/models/zz/" + DIGEST):
        bucket.client.put_object(Bucket=bucket.name, Key=stray, Body=b"x")

    assert store.digests() == digests

    store.remove(DIGEST)
    assert store.digests() == digests - {DIGEST}
    assert not store.exists(DIGEST)
    assert not (tmp_path / "cache-a" / DIGEST[:2] / DIGEST).exists()
    store.remove(DIGEST)  # nothing to delete: no error


def test_a_download_larger_than_stored_is_refused_leaving_nothing(
    store: S3ArtifactStore, bucket: Bucket, tmp_path: Path
) -> None:
    metadata = {"sha256": DIGEST, "size": str(len(CONTENT))}
    bucket.client.put_object(
        Bucket=bucket.name, Key=bucket.key(DIGEST), Body=CONTENT + b"more", Metadata=metadata
    )

    with pytest.raises(ArtifactCorrupt, match=f"more than the {len(CONTENT)} it was stored with"):
        store.verified_path(DIGEST)
    assert _files(tmp_path / "cache-a") == []


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.usefixtures("aws_credentials")
def test_a_bucket_that_does_not_answer_times_out_clearly(
    silent_endpoint: str, tmp_path: Path
) -> None:
    store = S3ArtifactStore(
        "s3://silent/models",
        tmp_path / "cache",
        endpoint_url=silent_endpoint,
        timeout_s=0.3,
        attempts=1,
    )

    with pytest.raises(Unavailable, match="cannot be reached.*s3_timeout_s"):
        store.verified_path(DIGEST)
    assert _files(tmp_path / "cache") == []


def test_a_missing_bucket_is_named(bucket: Bucket, source: Path, tmp_path: Path) -> None:
    store = S3ArtifactStore(
        "s3://no-such-bucket-here/x", tmp_path / "cache", endpoint_url=bucket.endpoint
    )
    with pytest.raises(DockyardError, match="s3://no-such-bucket-here/x does not exist"):
        store.verified_path(DIGEST)
    with pytest.raises(DockyardError, match="s3://no-such-bucket-here/x does not exist"):
        store.put(source)


def test_without_boto3_an_s3_url_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` finds uninstalled
    monkeypatch.setitem(sys.modules, "boto3.session", None)
    settings = load_settings({"home": tmp_path, "artifact_url": "s3://bucket/models"}, env={})

    with pytest.raises(MissingExtra, match=r"pip install 'dockyard\[s3\]'"):
        open_artifacts(settings, Home(tmp_path))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"artifact_url": "/srv/artifacts"}, "artifact_url must be s3://BUCKET/PREFIX"),
        ({"s3_endpoint_url": "minio:9000"}, "s3_endpoint_url must be an http"),
        ({"s3_timeout_s": 0}, "s3_timeout_s must be positive"),
    ],
    ids=["not-s3", "endpoint-without-scheme", "zero-timeout"],
)
def test_bad_store_settings_are_named(flags: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings(flags, env={})
