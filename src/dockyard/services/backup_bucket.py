"""Backups copied to an S3 (or S3-compatible) bucket (``backup_url = "s3://BUCKET/PREFIX"``), for a
deployment whose machines share one: each backup, once complete and verified in the home's
``backups`` folder, is uploaded as ``<prefix>/<its file name>`` (multipart past ``PART_BYTES``)
with its SHA-256 and size as object metadata; the local copy is kept, and only read.

A backup is downloaded into a new hidden folder (beside the home it is restored onto), counted and
hashed as it arrives: an object whose size is not the one it was uploaded with, or whose bytes do
not match its recorded SHA-256, is refused (BackupInvalid) and nothing of it is kept. The S3 client
is the artifact store's (``registry.s3_artifacts.client_factory``: the same endpoint, timeouts,
retries and credential chain).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dockyard.config import Settings
from dockyard.errors import (
    BackupInvalid,
    Conflict,
    DockyardError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from dockyard.home import SECRET_FILE_MODE
from dockyard.registry.artifacts import CHUNK_SIZE
from dockyard.registry.s3_artifacts import (
    ATTEMPTS,
    NOT_FOUND,
    SCHEME,
    SHA256_KEY,
    SIZE_KEY,
    BucketPrefix,
    client_factory,
    error_code,
)
from dockyard.services.backup import BACKUP_NAME, ENCRYPTED_SUFFIX, PLAIN_SUFFIX
from dockyard.services.backup_restore import verify_backup

logger = logging.getLogger(__name__)

PART_BYTES = 64 * 1024 * 1024
"""Uploads larger than this are sent in parts of this size (S3 takes at most 10,000 parts: a
backup of up to 640 GiB)."""
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ListedBackup:
    """A backup in the home's ``backups`` folder or in the bucket."""

    name: str
    size: int
    time: datetime
    """When the file was written, or the object uploaded (UTC)."""
    location: str
    """The file's path, or the object's ``s3://`` URL."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "time": self.time.isoformat(timespec="seconds"),
            "location": self.location,
        }


class BackupBucket:
    """The backups under one ``s3://BUCKET/PREFIX``; see the module's docstring."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        timeout_s: float = 60.0,
        attempts: int = ATTEMPTS,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self._place = BucketPrefix(
            url,
            "backup_url",
            client_factory(endpoint_url, timeout_s, attempts, purpose="backups in an s3:// bucket"),
            "the backup bucket",
            "create it, or fix backup_url (DOCKYARD_BACKUP_URL) or the URL given",
        )
        self._bucket = self._place.bucket
        self._part_bytes = part_bytes

    @classmethod
    def from_settings(cls, settings: Settings, url: str = "") -> BackupBucket:
        """The bucket of ``url`` (default: ``backup_url``), reached as the settings say."""
        return cls(
            url or settings.backup_url,
            endpoint_url=settings.s3_endpoint_url,
            timeout_s=settings.s3_timeout_s,
        )

    @property
    def url(self) -> str:
        return self._place.url

    def key_for(self, name: str) -> str:
        return self._place.key(name)

    def url_of(self, name: str) -> str:
        return self._place.where(self.key_for(name))

    def upload(self, path: Path) -> ListedBackup:
        """Upload the backup file ``path`` as ``<prefix>/<its name>`` with its SHA-256 and size
        as metadata; done already when the bucket holds it with both. Conflict when the name
        holds another object."""
        check_file_name(path.name)
        size, digest = _file_digest(path)
        key = self.key_for(path.name)
        with self._place.errors(key):
            head = self._place.head(key)
            if head is not None and _recorded(head) != (digest, size):
                raise Conflict(
                    f"{self.url_of(path.name)} exists already and holds another backup: "
                    "give the backup another name (--out)"
                )
            if head is None:
                from boto3.s3.transfer import TransferConfig

                transfer = TransferConfig(
                    multipart_threshold=self._part_bytes, multipart_chunksize=self._part_bytes
                )
                self._place.client().upload_file(
                    str(path),
                    self._bucket,
                    key,
                    ExtraArgs={"Metadata": {SHA256_KEY: digest, SIZE_KEY: str(size)}},
                    Config=transfer,
                )
                head = self._place.head(key)
        if head is None or _recorded(head) != (digest, size):
            raise Unavailable(
                f"{self.url_of(path.name)} does not hold what was uploaded (another writer?): "
                "try again"
            )
        logger.debug("uploaded backup %s to %s", path, self.url)
        return ListedBackup(path.name, size, _modified(head), self.url_of(path.name))

    def backups(self) -> list[ListedBackup]:
        """The backups right under the prefix (``.tar.gz``, ``.tar.gz.enc``), by name."""
        start = self._place.key("")
        found = []
        with self._place.errors(start):
            pages = self._place.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self._bucket, Prefix=start, Delimiter="/"):
                for item in page.get("Contents", ()):
                    name = str(item["Key"])[len(start) :]
                    if _is_backup_name(name):
                        modified = item["LastModified"].astimezone(UTC)
                        found.append(
                            ListedBackup(name, int(item["Size"]), modified, self.url_of(name))
                        )
        return sorted(found, key=lambda backup: backup.name)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest backups Dockyard named under the prefix beyond the newest ``keep``
        (as ``prune_backups`` does in the home): their URLs."""
        named = [backup.name for backup in self.backups() if BACKUP_NAME.match(backup.name)]
        removed = named[: max(0, len(named) - keep)]
        for name in removed:
            with self._place.errors(self.key_for(name)):
                self._place.client().delete_object(Bucket=self._bucket, Key=self.key_for(name))
        return [self.url_of(name) for name in removed]

    def download(self, name: str, folder: Path) -> Path:
        """The backup ``name`` written to ``folder/name`` (a new file, 0600), counted and hashed
        as it arrives; BackupInvalid, keeping nothing, when its size or SHA-256 is not the one it
        was uploaded with."""
        from botocore.exceptions import ClientError

        key = self.key_for(name)
        where = self.url_of(name)
        target = folder / name
        with self._place.errors(key):
            try:
                answer = self._place.client().get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:
                    raise NotFound(f"no backup {where}: see dockyard backup list") from None
                raise
            body = answer["Body"]
            try:
                digest, size = _expected(answer, where)
                free = shutil.disk_usage(folder).free
                if size > free:
                    raise DockyardError(
                        f"not enough space in {folder} to download {where}: it holds {size} "
                        f"bytes, {free} are free"
                    )
                try:
                    _write(body, target, size, digest, where)
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
            finally:
                body.close()
        logger.info("downloaded backup %s (%d bytes, sha256 verified)", where, size)
        return target


def upload_backup(bucket: BackupBucket, path: Path, passphrase: str = "") -> ListedBackup:
    """Verify the complete backup ``path`` (BackupInvalid: not uploaded), then upload it. The
    file is only read: whatever fails, it stays as it was, and the error says so."""
    verify_backup(path, passphrase)
    try:
        return bucket.upload(path)
    except DockyardError as exc:  # the same error (and exit code), saying the file is safe
        exc.message = f"{exc.message} (the backup {path} is complete and kept)"
        exc.args = (exc.message,)
        raise


def send_backups(
    bucket: BackupBucket, folder: Path, keep: int, passphrase: str, refused: set[str]
) -> tuple[list[ListedBackup], list[str]]:
    """The scheduled backups' copy: upload the newest ``keep`` backups Dockyard named in
    ``folder`` that the bucket lacks (newest first, each verified first), then delete the bucket's
    oldest beyond ``keep``. Returns what was uploaded and the URLs deleted. A backup that fails
    its verification is logged, added to ``refused`` and never tried again; a failure of the
    bucket raises (what was not sent is sent by the next call)."""
    held = {backup.name for backup in bucket.backups()}
    local = sorted((p for p in folder.iterdir() if BACKUP_NAME.match(p.name)), reverse=True)
    sent = []
    for path in local[:keep]:
        if path.name in held or path.name in refused:
            continue
        try:
            verify_backup(path, passphrase)
        except (BackupInvalid, InvalidInput) as exc:
            logger.error("backup %s is not uploaded to %s: %s", path, bucket.url, exc)
            refused.add(path.name)
            continue
        sent.append(bucket.upload(path))
    return sent, bucket.prune(keep)


def split_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX/NAME`` as (``s3://BUCKET/PREFIX``, ``NAME``)."""
    bucket, _, key = url.removeprefix(SCHEME).partition("/")
    folder, _, name = key.rpartition("/")
    if not url.startswith(SCHEME) or not bucket or not _is_backup_name(name):
        raise InvalidInput(
            f"a backup in a bucket is s3://BUCKET/PREFIX/NAME, NAME ending in {PLAIN_SUFFIX} or "
            f"{ENCRYPTED_SUFFIX}, got {url!r}"
        )
    return f"{SCHEME}{bucket}/{folder}".rstrip("/"), name


def check_file_name(name: str) -> str:
    """``name`` when a backup may be uploaded under it (what ``backups`` lists), else
    InvalidInput."""
    if not _is_backup_name(name):
        raise InvalidInput(
            f"a backup uploaded to backup_url is named *{PLAIN_SUFFIX} or *{ENCRYPTED_SUFFIX}, "
            f"got {name!r}: give --out such a name"
        )
    return name


def is_bucket_url(source: str) -> bool:
    return source.startswith(SCHEME)


@contextlib.contextmanager
def fetched(url: str, settings: Settings, beside: Path | None = None) -> Iterator[Path]:
    """The backup at ``url`` downloaded (checked against its recorded size and SHA-256) into a
    new hidden folder in ``beside`` (default: the system's temporary folder), which is removed
    with it on exit."""
    bucket_url, name = split_url(url)
    bucket = BackupBucket.from_settings(settings, bucket_url)
    if beside is not None:
        beside.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".dockyard-download-", dir=beside))
    try:
        yield bucket.download(name, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def local_backups(folder: Path) -> list[ListedBackup]:
    """The backups in the home's ``backups`` folder, by name."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if _is_backup_name(path.name) and path.is_file():
            stat = path.stat()
            time = datetime.fromtimestamp(stat.st_mtime, UTC)
            found.append(ListedBackup(path.name, stat.st_size, time, str(path)))
    return found


def _is_backup_name(name: str) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and name.endswith((PLAIN_SUFFIX, ENCRYPTED_SUFFIX))
    )


def _file_digest(path: Path) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            size += len(chunk)
            hasher.update(chunk)
    return size, hasher.hexdigest()


def _expected(answer: dict[str, Any], where: str) -> tuple[str, int]:
    """The SHA-256 and size the object was uploaded with; BackupInvalid when it has other bytes
    than that size, or none recorded."""
    metadata = answer.get("Metadata") or {}
    digest, recorded = str(metadata.get(SHA256_KEY, "")), str(metadata.get(SIZE_KEY, ""))
    if not SHA256.match(digest) or not recorded.isdigit():
        raise BackupInvalid(
            f"{where} has no recorded SHA-256 and size (it was not uploaded by Dockyard): "
            "copy it down and restore the file"
        )
    size, length = int(recorded), int(answer["ContentLength"])
    if length != size:
        raise BackupInvalid(
            f"{where} holds {length} bytes, it was uploaded with {size}: refused, nothing restored"
        )
    return digest, size


def _write(body: Any, target: Path, size: int, digest: str, where: str) -> None:
    """Write ``body`` to the new file ``target``: never more than ``size`` bytes; BackupInvalid
    unless it is exactly ``size`` bytes with SHA-256 ``digest``."""
    hasher = hashlib.sha256()
    written = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(target, flags, SECRET_FILE_MODE), "wb") as out:
        while chunk := body.read(CHUNK_SIZE):
            written += len(chunk)
            if written > size:
                raise BackupInvalid(
                    f"{where} sent more than the {size} bytes it was uploaded with: refused"
                )
            hasher.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if written != size:
        raise BackupInvalid(f"{where} sent {written} of its {size} bytes: refused, try again")
    if hasher.hexdigest() != digest:
        raise BackupInvalid(
            f"{where} does not match the SHA-256 it was uploaded with (its bytes were altered "
            "in the bucket): refused, nothing restored"
        )


def _recorded(head: dict[str, Any]) -> tuple[str, int]:
    return str((head.get("Metadata") or {}).get(SHA256_KEY, "")), int(head["ContentLength"])


def _modified(head: dict[str, Any]) -> datetime:
    modified = head.get("LastModified")
    return modified.astimezone(UTC) if isinstance(modified, datetime) else datetime.now(UTC)


__all__ = [
    "BackupBucket",
    "ListedBackup",
    "check_file_name",
    "fetched",
    "is_bucket_url",
    "local_backups",
    "send_backups",
    "split_url",
    "upload_backup",
]
