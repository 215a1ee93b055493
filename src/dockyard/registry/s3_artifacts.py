"""An artifact store in an S3 (or S3-compatible) bucket, shared by every machine of one registry.

Blobs are ``<prefix>/<digest[:2]>/<digest>`` with their sha256 and size as object metadata. Each
machine reads them through a local cache (a ``LocalArtifactStore`` in the home): a blob is
downloaded once, hashed while it is written (atomically) and re-hashed on every
``verified_path``; a cached copy that no longer matches is fetched again, and a bucket copy that
does not match is never handed out. boto3 (extra ``s3``) is imported here only; credentials come
from the standard AWS chain, never from Dockyard's settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dockyard.errors import ArtifactCorrupt, DockyardError, InvalidInput, MissingExtra, Unavailable
from dockyard.registry.artifacts import (
    CHUNK_SIZE,
    DIGEST_PATTERN,
    MISSING,
    LocalArtifactStore,
    check_digest,
)

logger = logging.getLogger(__name__)

SCHEME = "s3://"
SHA256_KEY = "sha256"
SIZE_KEY = "size"
"""Object metadata (``x-amz-meta-…``) written with each blob: what it was stored as."""
ATTEMPTS = 3
"""Tries of one call (botocore's standard retry mode: timeouts, throttling, 5xx)."""
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
BUSY = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


def parse_url(url: str, setting: str = "artifact_url") -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` as (bucket, prefix without surrounding slashes); InvalidInput
    naming ``setting`` otherwise."""
    bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
    if not url.startswith(SCHEME) or not bucket:
        raise InvalidInput(f"{setting} must be s3://BUCKET/PREFIX, got {url!r}")
    return bucket, prefix.strip("/")


class S3ArtifactStore:
    """Blobs in a bucket, read through a verified local cache; see the module's docstring.

    The client is made on first use in each process (a forked worker never shares its parent's
    connections) from the standard AWS credential chain.
    """

    def __init__(
        self,
        url: str,
        cache: Path,
        *,
        endpoint_url: str = "",
        timeout_s: float = 60.0,
        attempts: int = ATTEMPTS,
    ) -> None:
        self._place = BucketPrefix(
            url,
            "artifact_url",
            client_factory(endpoint_url, timeout_s, attempts),
            "the artifact store",
            "create it or fix DOCKYARD_ARTIFACT_URL",
        )
        self._bucket, self._prefix = self._place.bucket, self._place.prefix
        self._cache = LocalArtifactStore(cache)

    @property
    def url(self) -> str:
        return self._place.url

    @property
    def cache(self) -> LocalArtifactStore:
        return self._cache

    def key_for(self, digest: str) -> str:
        """The object key of the blob ``digest``."""
        check_digest(digest)
        name = f"{digest[:2]}/{digest}"
        return self._place.key(name)

    def put(self, source: Path, digest: str | None = None) -> str:
        """Copy ``source`` into the cache (verified, as the local store does), then upload it
        unless the bucket holds it already with the same sha256 and size."""
        digest = self._cache.put(source, digest)
        path = self._cache.path_for(digest)
        size = path.stat().st_size
        key = self.key_for(digest)
        with self._place.errors(key):
            stored = self._place.head(key)
            if stored is not None and _recorded(stored) == (digest, size):
                logger.debug("artifact %s already in %s", digest, self.url)
                return digest
            metadata = {SHA256_KEY: digest, SIZE_KEY: str(size)}
            self._place.client().upload_file(
                str(path), self._bucket, key, ExtraArgs={"Metadata": metadata}
            )
        logger.debug("uploaded artifact %s to %s", digest, self.url)
        return digest

    def verified_path(self, digest: str) -> Path:
        """The cached copy, re-hashed; fetched from the bucket when it is missing or corrupt."""
        try:
            return self._cache.verified_path(digest)
        except ArtifactCorrupt as exc:
            if exc.actual != MISSING:
                logger.warning(
                    "cached artifact %s is corrupt (found sha256 %s): fetching it again",
                    exc.path,
                    exc.actual,
                )
        return self._fetch(digest)

    def exists(self, digest: str) -> bool:
        key = self.key_for(digest)
        with self._place.errors(key):
            return self._place.head(key) is not None

    def remove(self, digest: str) -> None:
        key = self.key_for(digest)
        with self._place.errors(key):
            self._place.client().delete_object(Bucket=self._bucket, Key=key)
        self._cache.remove(digest)

    def digests(self) -> set[str]:
        start = f"{self._prefix}/" if self._prefix else ""
        found = set()
        with self._place.errors(start):
            pages = self._place.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self._bucket, Prefix=start):
                for item in page.get("Contents", ()):
                    folder, _, name = str(item["Key"])[len(start) :].partition("/")
                    if DIGEST_PATTERN.match(name) and folder == name[:2]:
                        found.add(name)
        return found

    def remove_stale_temps(self, is_alive: Callable[[int], bool]) -> list[Path]:
        """The cache's unfinished downloads and copies of processes that are gone, deleted."""
        return self._cache.remove_stale_temps(is_alive)

    def _fetch(self, digest: str) -> Path:
        """Download the blob into the cache, hashing and counting it as it arrives: past the size
        it was stored with, or with other bytes, nothing is kept and ArtifactCorrupt is raised."""
        from botocore.exceptions import ClientError

        key = self.key_for(digest)
        where = f"{SCHEME}{self._bucket}/{key}"
        with self._place.errors(key):
            try:
                answer = self._place.client().get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:
                    raise ArtifactCorrupt(where, digest, MISSING) from None
                raise
            body = answer["Body"]
            try:
                size = int(answer["ContentLength"])
                limit = _stored_size(answer.get("Metadata") or {}, size)
                if size > limit:
                    raise ArtifactCorrupt(where, digest, _too_large(size, limit))
                written = self._cache.write(_bounded(body, limit, where, digest), digest)
            finally:
                body.close()
        if written != digest:
            raise ArtifactCorrupt(where, digest, written)
        logger.info("fetched artifact %s from %s", digest, self.url)
        return self._cache.path_for(digest)


class BucketPrefix:
    """The bucket and prefix of an ``s3://BUCKET/PREFIX`` setting, its client (made on first use
    in each process: a forked worker never shares its parent's connections) and its errors
    translated naming it: what each of Dockyard's buckets starts from."""

    def __init__(
        self, url: str, setting: str, make_client: Callable[[], Any], store: str, fix: str
    ) -> None:
        """``store`` names the bucket in errors (``the artifact store``), ``fix`` says what to do
        when it does not exist; InvalidInput naming ``setting`` when ``url`` is malformed."""
        self.bucket, self.prefix = parse_url(url, setting)
        self.url = f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
        self._make_client = make_client
        self._store, self._fix = store, fix
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    def key(self, name: str) -> str:
        """The key of ``name`` under the prefix (``""``: the prefix's folder itself)."""
        return (self.prefix and f"{self.prefix}/") + name

    def where(self, key: str) -> str:
        """The ``s3://`` URL of the object ``key``."""
        return f"{SCHEME}{self.bucket}/{key}"

    def client(self) -> Any:
        pid = os.getpid()
        if self._client_pid != pid:  # first use, or a forked child: make its own connections
            self._lock = threading.Lock()
            self._client, self._client_pid = None, pid
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def head(self, key: str) -> dict[str, Any] | None:
        """The head of the object ``key`` (``head_object``), or None when there is none."""
        return head_object(self.client(), self.bucket, key)

    def errors(self, key: str) -> contextlib.AbstractContextManager[None]:
        """S3's errors on the object ``key`` as Dockyard's (``s3_errors``)."""
        return s3_errors(self._store, self.url, self.where(key), self._fix)


@contextlib.contextmanager
def s3_errors(store: str, url: str, where: str, fix: str) -> Iterator[None]:
    """boto3's and botocore's errors as Dockyard's, naming the bucket (``store``, ``url``), the
    object (``where``) and what to check; ``fix`` says what to do when the bucket is missing."""
    import botocore.exceptions as boto
    from boto3.exceptions import S3UploadFailedError

    try:
        yield
    except (boto.BotoCoreError, boto.ClientError) as exc:
        raise _translated(exc, store, url, where, fix) from exc
    except S3UploadFailedError as exc:
        # The upload manager wraps the client's error; what went wrong is that one.
        cause = exc.__cause__ or exc.__context__
        error = cause if isinstance(cause, boto.ClientError | boto.BotoCoreError) else exc
        raise _translated(error, store, url, where, fix) from exc


def _translated(error: Exception, store: str, url: str, where: str, fix: str) -> DockyardError:
    import botocore.exceptions as boto

    if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError):
        return DockyardError(
            f"no usable AWS credentials for {store} {url} ({error}): set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role"
        )
    if isinstance(error, boto.ClientError):
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "") or code
        if code == "NoSuchBucket":
            return DockyardError(f"the bucket of {store} {url} does not exist: {fix}")
        if code in BUSY or code.startswith("5"):
            return Unavailable(f"{store} is unavailable at {where} ({message}); try again")
        return DockyardError(
            f"{store} refused {where}: {code} {message}; check the bucket's "
            "permissions and the credentials"
        )
    if isinstance(error, boto.BotoCoreError):
        return Unavailable(
            f"{store} cannot be reached for {where} ({error}); check "
            "DOCKYARD_S3_ENDPOINT_URL, the network and s3_timeout_s"
        )
    return DockyardError(f"{store} failed on {where}: {error}")


def client_factory(
    endpoint_url: str,
    timeout_s: float,
    attempts: int = ATTEMPTS,
    *,
    purpose: str = "an s3:// artifact_url",
) -> Callable[[], Any]:
    """A function making an S3 client (the settings' endpoint, ``timeout_s`` to connect and
    between bytes, ``attempts`` tries of each call), shared by every bucket Dockyard uses;
    MissingExtra naming ``purpose`` now when boto3 is not installed."""
    try:
        import boto3.session
        from botocore.config import Config
    except ImportError:
        raise MissingExtra(f"boto3 (for {purpose})", "s3") from None
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": attempts, "mode": "standard"},
    )

    def make() -> Any:
        global _session
        # Making clients from one session is not thread-safe; one session for the process
        # (under a lock) reads botocore's service models once, not once per client.
        with _session_lock:
            if _session is None:
                _session = boto3.session.Session()
            return _session.client("s3", endpoint_url=endpoint_url or None, config=config)

    return make


def _forget_session() -> None:
    """In a forked child: a session and a lock of its own (a thread of the parent may have held
    the lock, or a credential refresh's, at the fork)."""
    global _session, _session_lock
    _session, _session_lock = None, threading.Lock()


_session: Any = None
_session_lock = threading.Lock()
os.register_at_fork(after_in_child=_forget_session)


def head_object(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The head of the object ``key`` (its size, metadata, ETag), or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        head: dict[str, Any] = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND:
            return None
        raise
    return head


def error_code(error: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``404``, …); else empty."""
    response = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _recorded(head: dict[str, Any]) -> tuple[str, int]:
    """The sha256 an object was uploaded with (empty when another tool put it) and its size."""
    return str((head.get("Metadata") or {}).get(SHA256_KEY, "")), int(head["ContentLength"])


def _stored_size(metadata: dict[str, str], size: int) -> int:
    """The size the blob was uploaded with; the object's own when another tool put it."""
    recorded = metadata.get(SIZE_KEY, "")
    return int(recorded) if recorded.isdigit() else size


def _too_large(size: int, limit: int) -> str:
    return f"{size} bytes, more than the {limit} it was stored with"


def _bounded(body: Any, limit: int, where: str, digest: str) -> Iterator[bytes]:
    """The body's chunks, failing as soon as they pass ``limit`` bytes."""
    total = 0
    while chunk := body.read(CHUNK_SIZE):
        total += len(chunk)
        if total > limit:
            raise ArtifactCorrupt(where, digest, _too_large(total, limit))
        yield chunk


__all__ = [
    "BucketPrefix",
    "S3ArtifactStore",
    "client_factory",
    "error_code",
    "head_object",
    "parse_url",
    "s3_errors",
]
