"""The backup file: a gzip-compressed tar of files named relative to the home, checksummed as they
are written, with ``manifest.json`` (every file's size and SHA-256) as its last member; and its
reading, where every member is hostile until checked.

Reading refuses, before a byte of data is used: anything but a regular file (links, devices,
folders), a name that is absolute, climbs (``..``), is not normalised or lies outside the folders a
backup holds, a member the manifest does not list or lists with another size, a manifest larger
than ``MAX_MANIFEST_BYTES``, more than ``MAX_MEMBERS`` members.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from dockyard.errors import BackupInvalid

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "dockyard.db"
POSTGRES_MEMBER = "registry.pgdump"
FOLDERS = frozenset({"artifacts", "predictions", "labels", "secrets"})
"""Top-level folders a backup may hold (the home's own names); single files at the top are the
registry (``SQLITE_MEMBER``/``POSTGRES_MEMBER``), the manifest and a ``.toml`` config file."""
TOP_FILES = frozenset({MANIFEST, SQLITE_MEMBER, POSTGRES_MEMBER})
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 1_000_000
MAX_NAME = 1024
COMPRESS_LEVEL = 6
"""zlib level: artifacts are often compressed already, and 9 costs twice the time for ~1 %."""
COPY_CHUNK = 1024 * 1024


class Sink(Protocol):
    """Where a backup is written: a file, or the encrypting stream in front of one."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class Entry:
    """One file of a backup: its path relative to the home, size and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a backup holds and how it was made."""

    created: str
    dockyard_version: str
    database: str
    """``sqlite`` or ``postgresql``: the registry is ``dockyard.db`` or ``registry.pgdump``."""
    has_secrets: bool
    files: tuple[Entry, ...]
    format: int = FORMAT

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "format": self.format,
            "dockyard_version": self.dockyard_version,
            "created": self.created,
            "database": self.database,
            "secrets": self.has_secrets,
            "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.files],
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            if body["format"] != FORMAT:
                raise BackupInvalid(
                    f"the backup's format {body['format']!r} is not one this Dockyard reads "
                    f"({FORMAT}): restore it with the Dockyard version that made it"
                )
            files = tuple(
                Entry(str(item["path"]), int(item["size"]), str(item["sha256"]))
                for item in body["files"]
            )
            manifest = cls(
                created=str(body["created"]),
                dockyard_version=str(body["dockyard_version"]),
                database=str(body["database"]),
                has_secrets=bool(body["secrets"]),
                files=files,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupInvalid(f"the backup's manifest is malformed ({exc})") from None
        if manifest.database not in ("sqlite", "postgresql"):
            raise BackupInvalid(f"the backup's manifest names database {manifest.database!r}")
        return manifest

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


class ArchiveWriter:
    """Adds files to a new backup stream, hashing each as it goes; ``finish`` writes the
    manifest."""

    def __init__(self, out: Sink) -> None:
        self._gzip = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0)
        # Open across add_file calls, closed by finish (or with the file on a failure).
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._gzip, mode="w|", format=tarfile.PAX_FORMAT
        )
        self.entries: list[Entry] = []

    def add_file(self, source: Path, name: str) -> Entry:
        """Add ``source`` as ``name``; FileNotFoundError when it is gone (the caller decides)."""
        with source.open("rb") as handle:
            size = _size(handle)
            hashing = _Hashing(handle)
            self._tar.addfile(_info(name, size), hashing)
        entry = Entry(name, size, hashing.hasher.hexdigest())
        self.entries.append(entry)
        return entry

    def finish(self, manifest: Manifest) -> None:
        data = manifest.to_json()
        self._tar.addfile(_info(MANIFEST, len(data)), io.BytesIO(data))
        self._tar.close()
        self._gzip.close()


def _size(handle: IO[bytes]) -> int:
    return os.fstat(handle.fileno()).st_size


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    return info


class _Hashing(io.RawIOBase):
    """A file read through, SHA-256 of what was read kept."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.hasher.update(data)
        return data


@dataclass(frozen=True)
class Member:
    """A checked member of a backup being read: its name, size and data (read it before the
    next member: the archive is a stream)."""

    name: str
    size: int
    data: IO[bytes]


def check_name(name: str) -> str:
    """``name`` if it is a path a backup may hold, else BackupInvalid naming it."""
    path = PurePosixPath(name)
    if (
        not name
        or len(name) > MAX_NAME
        or path.is_absolute()
        or str(path) != name
        or any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in path.parts)
    ):
        raise BackupInvalid(f"the backup holds a member with a refused name: {name!r}")
    is_top_file = len(path.parts) == 1 and (name in TOP_FILES or name.endswith(".toml"))
    if not is_top_file and not (len(path.parts) > 1 and path.parts[0] in FOLDERS):
        raise BackupInvalid(f"the backup holds {name!r}, which is no part of a Dockyard home")
    return name


def members(stream: IO[bytes], destination: Path | None = None) -> Iterator[Member]:
    """The members of a backup stream, each checked (see the module docstring); ``destination``,
    where they are about to be extracted, is checked with tarfile's ``data`` filter too."""
    with damaged():
        unzipped = gzip.GzipFile(fileobj=stream, mode="rb")
        with tarfile.open(fileobj=unzipped, mode="r|") as tar:
            yield from _checked(tar, destination)


def _checked(tar: tarfile.TarFile, destination: Path | None) -> Iterator[Member]:
    for count, info in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise BackupInvalid(f"the backup holds more than {MAX_MEMBERS} members")
        if not info.isreg():
            raise BackupInvalid(
                f"the backup holds {info.name!r}, which is not a regular file "
                "(a link, folder or device): refused"
            )
        name = check_name(info.name)
        if destination is not None:
            try:
                tarfile.data_filter(info, str(destination))
            except tarfile.FilterError as exc:
                raise BackupInvalid(f"the backup member {name!r} is refused: {exc}") from None
        if name == MANIFEST and info.size > MAX_MANIFEST_BYTES:
            raise BackupInvalid(f"the backup's manifest is larger than {MAX_MANIFEST_BYTES}")
        data = tar.extractfile(info)
        if data is None:  # not reached: regular files always have data
            raise BackupInvalid(f"the backup member {name!r} has no data")
        yield Member(name, info.size, data)


@contextlib.contextmanager
def damaged() -> Iterator[None]:
    """The archive formats' errors on a damaged or truncated file, as BackupInvalid."""
    try:
        yield
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BackupInvalid(f"the backup is damaged or truncated ({exc})") from None
