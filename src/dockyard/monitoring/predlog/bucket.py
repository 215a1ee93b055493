"""The prediction log's bucket (``prediction_log_url = "s3://BUCKET/PREFIX"``): each machine's
segments as ``<prefix>/<machine>/<model>/<YYYY-MM-DD>/<segment name>``, the bytes of the file on
disk (a sealed segment stays sealed: its name is bound into the seal, so it keeps it), with their
SHA-256 and size as object metadata.

Only the S3 calls live here: ``mirror`` decides what to send and delete, ``machines`` what to
download. A download is checked against the recorded SHA-256 and size before anything is written,
so an object altered in the bucket is refused and never cached. The client, its timeouts, retries,
credentials and error translation are the artifact store's (``registry.s3_artifacts``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

from dockyard.config import Settings
from dockyard.errors import DockyardError, NotFound
from dockyard.home import DIR_MODE
from dockyard.monitoring.predlog.layout import DAY_NAME
from dockyard.monitoring.predlog.storage import SEGMENT_NAME, temp_file
from dockyard.registry.refs import NAME_PATTERN
from dockyard.registry.s3_artifacts import (
    ATTEMPTS,
    NOT_FOUND,
    SHA256_KEY,
    SIZE_KEY,
    BucketPrefix,
    client_factory,
    error_code,
)

logger = logging.getLogger(__name__)


class Listed(NamedTuple):
    """An object of the bucket as its listing shows it."""

    size: int
    etag: str
    """Changes whenever the object is written again (an erasure's rewrite, a tampering)."""


def is_segment_name(name: str) -> bool:
    """Whether ``name`` (``<model>/<YYYY-MM-DD>/<segment>``, relative to a machine's folder) is
    a segment of the log's layout: only such objects are mirrored, deleted or downloaded, and each
    part is a safe path name."""
    parts = name.split("/")
    return (
        len(parts) == 3
        and NAME_PATTERN.match(parts[0]) is not None
        and DAY_NAME.match(parts[1]) is not None
        and SEGMENT_NAME.match(parts[2]) is not None
    )


class LogBucket:
    """The machines' prediction logs under one ``s3://BUCKET/PREFIX``; see the module."""

    def __init__(self, place: BucketPrefix) -> None:
        self._place = place
        self._bucket = place.bucket

    @classmethod
    def from_settings(cls, settings: Settings, attempts: int = ATTEMPTS) -> LogBucket:
        """The bucket of ``prediction_log_url``, reached as the settings say."""
        make_client = client_factory(
            settings.s3_endpoint_url,
            settings.s3_timeout_s,
            attempts,
            purpose="a prediction log in an s3:// bucket",
        )
        fix = "create it, or fix prediction_log_url (DOCKYARD_PREDICTION_LOG_URL)"
        return cls(
            BucketPrefix(
                settings.prediction_log_url,
                "prediction_log_url",
                make_client,
                "the prediction log bucket",
                fix,
            )
        )

    @property
    def url(self) -> str:
        return self._place.url

    def key_for(self, machine: str, name: str = "") -> str:
        """The key of ``name`` (``<model>/<day>/<segment>``, or a folder of it) in ``machine``'s
        folder."""
        return self._place.key(f"{machine}/{name}")

    def machines(self) -> list[str]:
        """The machines with a folder under the prefix (those whose name is safe), by name."""
        start = self._place.key("")
        found = []
        with self._place.errors(start):
            pages = self._place.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self._bucket, Prefix=start, Delimiter="/"):
                for folder in page.get("CommonPrefixes", ()):
                    name = str(folder["Prefix"])[len(start) :].rstrip("/")
                    if NAME_PATTERN.match(name):
                        found.append(name)
        return sorted(found)

    def objects(self, machine: str, model: str = "") -> dict[str, Listed]:
        """The segments in ``machine``'s folder (of one ``model`` if given), by their name
        relative to it; objects that are not segments of the layout are left out."""
        start = self.key_for(machine)
        found = {}
        with self._place.errors(start):
            pages = self._place.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self._bucket, Prefix=start + (model and f"{model}/")):
                for item in page.get("Contents", ()):
                    name = str(item["Key"])[len(start) :]
                    if is_segment_name(name):
                        found[name] = Listed(int(item["Size"]), str(item.get("ETag", "")))
        return found

    def recorded(self, machine: str, name: str) -> tuple[str, int] | None:
        """The SHA-256 and size the object was uploaded with (None: no such object)."""
        key = self.key_for(machine, name)
        with self._place.errors(key):
            head = self._place.head(key)
        if head is None:
            return None
        metadata = head.get("Metadata") or {}
        return str(metadata.get(SHA256_KEY, "")), int(metadata.get(SIZE_KEY, "-1") or -1)

    def put(self, machine: str, name: str, data: bytes, digest: str) -> str:
        """Upload ``data`` (of SHA-256 ``digest``) as ``name`` in ``machine``'s folder, replacing
        what is there; its ETag."""
        key = self.key_for(machine, name)
        metadata = {SHA256_KEY: digest, SIZE_KEY: str(len(data))}
        with self._place.errors(key):
            answer = self._place.client().put_object(
                Bucket=self._bucket, Key=key, Body=data, Metadata=metadata
            )
        return str(answer.get("ETag", ""))

    def delete(self, machine: str, name: str) -> None:
        key = self.key_for(machine, name)
        with self._place.errors(key):
            self._place.client().delete_object(Bucket=self._bucket, Key=key)

    def fetch(self, machine: str, name: str, target: Path) -> None:
        """Download ``name`` of ``machine``'s folder to ``target`` (written beside it, 0600, then
        moved into place), once its bytes match the SHA-256 and size recorded with it; otherwise
        DockyardError, and nothing is written."""
        from botocore.exceptions import ClientError

        key = self.key_for(machine, name)
        where = self._place.where(key)
        with self._place.errors(key):
            try:
                answer = self._place.client().get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:
                    raise NotFound(
                        f"{where} is gone (mirrored away meanwhile): try again"
                    ) from None
                raise
            metadata = answer.get("Metadata") or {}
            digest, size = str(metadata.get(SHA256_KEY, "")), str(metadata.get(SIZE_KEY, ""))
            if not digest or not size.isdigit():
                raise DockyardError(
                    f"{where} has no recorded SHA-256 and size (Dockyard did not upload it): "
                    "refused, nothing cached"
                )
            with contextlib.closing(answer["Body"]) as body:
                data = body.read(int(size) + 1)  # one byte more than recorded tells it grew
        if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
            raise DockyardError(
                f"{where} does not match the SHA-256 and size it was uploaded with (its bytes "
                "were altered in the bucket): refused, nothing cached; its machine uploads it "
                "again on its next mirror pass"
            )
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        temp = temp_file(target, data, None, durable=False)
        try:
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
