"""Folder artifacts as one tar file: packed deterministically, unpacked within bounds.

The same folder always packs to the same bytes (sorted names, zeroed times and owners), so the
artifact's digest changes only when the code does. Unpacking takes a tar (plain or compressed) from
memory and writes only regular files and folders inside its target, and never more than the limits:
a few kilobytes of bzip2 can inflate to gigabytes.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from dockyard.errors import InvalidInput

MAX_UNPACKED_BYTES = 2**30
"""The most a model's code may unpack to, all files together."""
MAX_MEMBERS = 10_000
"""The most files and folders a model's code may hold."""
MAX_READ_BYTES = 2**20
"""The most the unpacker inflates at once: a header block, a pax or long-name record (which tarfile
reads whole, into memory), a chunk of a file."""
MAX_HEADER_BYTES = 64 * 2**20
"""Inflated tar allowed beyond the files' own bytes: headers, pax records and padding."""
COPY_CHUNK = 256 * 2**10

SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".DS_Store"})
"""Build leftovers and metadata that are not part of a model's code."""


def pack_folder(folder: Path, target: Path) -> None:
    """Write ``folder``'s regular files and directories to the tar ``target``, deterministically.

    Symbolic links and other special files are refused: they could point outside the folder.
    """
    paths = sorted(
        path
        for path in folder.rglob("*")
        if not SKIPPED_NAMES.intersection(path.relative_to(folder).parts)
    )
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise InvalidInput(
                    f"{path} is a link or special file; a model folder may not hold one"
                )
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def unpack(data: bytes, target: Path, name: str) -> None:
    """Unpack the tar ``data`` (the archive called ``name``) into the empty folder ``target``.

    Two passes over the same bytes. The first reads every header: unsafe paths, links and special
    files, more than MAX_MEMBERS members or more than MAX_UNPACKED_BYTES declared are refused before
    anything is written. The second writes, and stops past MAX_UNPACKED_BYTES whatever the headers
    said. Either pass inflates at most MAX_UNPACKED_BYTES + MAX_HEADER_BYTES, MAX_READ_BYTES at a
    time. On refusal, what was written stays in ``target`` for the caller to remove.
    """
    with _unpack_errors(name), _open(data, name) as tar:
        for _ in _checked_members(name, tar):
            pass
    with _unpack_errors(name), _open(data, name) as tar:
        written = 0
        for member in _checked_members(name, tar):
            path = target.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise InvalidInput(f"{name} holds {member.name!r}, which cannot be read")
            with source, path.open("wb") as sink:
                written = _copy(name, source, sink, written)


def _checked_members(name: str, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members, read one header at a time, each checked before it is yielded."""
    declared = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise InvalidInput(
                f"{name} holds more than {MAX_MEMBERS:,} files and folders (MAX_MEMBERS); "
                "refusing to unpack it"
            )
        _check_member(name, member)
        declared += member.size if member.isfile() else 0
        if declared > MAX_UNPACKED_BYTES:
            raise InvalidInput(
                f"{name} unpacks to more than {MAX_UNPACKED_BYTES:,} bytes "
                "(MAX_UNPACKED_BYTES); refusing to unpack it"
            )
        yield member


def _check_member(archive: str, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if not name.parts or name.is_absolute() or ".." in name.parts or "\\" in member.name:
        raise InvalidInput(
            f"{archive} holds the unsafe path {member.name!r}; refusing to unpack it"
        )
    if member.issparse() or not (member.isfile() or member.isdir()):
        raise InvalidInput(
            f"{archive} holds {member.name!r}, a link or special file; refusing to unpack it"
        )


def _copy(name: str, source: IO[bytes], sink: IO[bytes], written: int) -> int:
    while chunk := source.read(COPY_CHUNK):
        written += len(chunk)
        if written > MAX_UNPACKED_BYTES:
            raise InvalidInput(
                f"{name} unpacks to more than {MAX_UNPACKED_BYTES:,} bytes "
                "(MAX_UNPACKED_BYTES); refusing to unpack it"
            )
        sink.write(chunk)
    return written


@contextlib.contextmanager
def _open(data: bytes, name: str) -> Iterator[tarfile.TarFile]:
    """The tar in ``data``, inflated (gzip, bzip2, xz) through a bounded, forward-only stream."""
    with (
        contextlib.closing(_inflated(data)) as inflated,
        tarfile.open(fileobj=_BoundedStream(inflated, name), mode="r:") as tar,
    ):
        yield tar


def _inflated(data: bytes) -> _Source:
    raw = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if data.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


class _Source(Protocol):
    """An inflating reader (or the bytes themselves): reads at most ``size`` bytes at a time."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _unpack_errors(name: str) -> Iterator[None]:
    try:
        yield
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidInput(f"cannot unpack {name}: {exc}") from exc


class _BoundedStream:
    """A read-only, forward-only view of an inflated tar that refuses to inflate too much.

    tarfile reads a header's pax record or long name in one ``read`` of the size the header
    declares, so a read larger than MAX_READ_BYTES is refused before anything is inflated for it.
    """

    def __init__(self, inner: _Source, name: str) -> None:
        self._inner = inner
        self._name = name
        self._position = 0

    def read(self, size: int = -1, /) -> bytes:
        if not 0 <= size <= MAX_READ_BYTES:
            raise InvalidInput(
                f"{self._name} holds a tar header record larger than {MAX_READ_BYTES:,} bytes "
                "(MAX_READ_BYTES); refusing to unpack it"
            )
        if self._position + size > MAX_UNPACKED_BYTES + MAX_HEADER_BYTES:
            raise InvalidInput(
                f"{self._name} inflates past {MAX_UNPACKED_BYTES + MAX_HEADER_BYTES:,} bytes "
                "(MAX_UNPACKED_BYTES + MAX_HEADER_BYTES); refusing to unpack it"
            )
        chunk = self._inner.read(size)
        self._position += len(chunk)
        return chunk

    def seek(self, position: int, whence: int = io.SEEK_SET, /) -> int:
        target = position if whence == io.SEEK_SET else self._position + position
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._position:
            raise io.UnsupportedOperation("the tar stream only moves forward")
        while self._position < target and self.read(min(MAX_READ_BYTES, target - self._position)):
            pass
        return self._position

    def tell(self) -> int:
        return self._position

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("the tar stream is read-only")

    def close(self) -> None:
        """Nothing to release: the inflating reader is closed by whoever opened it."""
