"""Content-addressed artifact storage: blobs named by their sha256, verified on every read.

``ArtifactStore`` is the seam; ``LocalArtifactStore`` keeps blobs under a folder as
``root/<digest[:2]>/<digest>``, and ``s3_artifacts.S3ArtifactStore`` in a bucket shared by many
machines (with a local store as its read-through cache).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from dockyard.errors import ArtifactCorrupt, DockyardError, InvalidInput
from dockyard.home import DIR_MODE, SECRET_FILE_MODE

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".tmp-"
"""A blob being written is ``.tmp-<pid>-<random>`` beside its final name."""
MISSING = "missing"


class ArtifactStore(Protocol):
    """Where artifact bytes live, addressed by their sha256 hex digest."""

    def put(self, source: Path, digest: str | None = None) -> str:
        """Store a copy of the file ``source`` and return its sha256 hex digest.

        Idempotent: storing the same bytes twice keeps one blob. A reader never sees a partial blob.
        ``digest``, when the caller hashed the file already, saves hashing it twice; the copy is
        verified against it all the same.
        """
        ...

    def remove(self, digest: str) -> None:
        """Delete the blob stored under ``digest`` (nothing if there is none).

        Only for a blob no version uses: the store cannot tell, its caller must.
        """
        ...

    def verified_path(self, digest: str) -> Path:
        """A local path to the blob, re-hashed on every call.

        Raises ArtifactCorrupt (``actual`` is the digest found, or "missing") when the bytes no
        longer match, and InvalidInput when ``digest`` is not 64 lowercase hex characters.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest`` (without verifying its bytes)."""
        ...

    def digests(self) -> set[str]:
        """Every stored digest, for garbage collection."""
        ...


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a sha256 digest in 64 lowercase hex, else raise InvalidInput."""
    if not isinstance(digest, str) or not DIGEST_PATTERN.match(digest):
        raise InvalidInput(
            f"invalid artifact digest {digest!r}: expected 64 lowercase hexadecimal characters"
        )
    return digest


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks (artifacts may be gigabytes)."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


class LocalArtifactStore:
    """Blobs in a local folder: ``root/<digest[:2]>/<digest>``, mode 0600, folders 0700.

    Writes are atomic and durable (temporary file in the target folder, fsync, ``os.replace``,
    fsync of the folder): a crash leaves no blob or a whole one, plus at most a hidden temp file
    named after the writing process, which ``remove_stale_temps`` deletes once that process is gone.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, digest: str) -> Path:
        """Where the blob for ``digest`` lives (it may not exist; nothing is verified)."""
        check_digest(digest)
        return self._root / digest[:2] / digest

    def put(self, source: Path, digest: str | None = None) -> str:
        source = Path(source)
        if source.is_dir():
            raise InvalidInput(
                f"cannot store artifact {source}: it is a folder; pack it into one file first"
            )
        if digest is None:
            with _reading(source):
                digest = file_sha256(source)
        target = self.path_for(digest)
        if target.is_file() and self._matches(target, digest):
            logger.debug("artifact %s already stored", digest)
            return digest
        with _reading(source), source.open("rb") as src:
            written = self.write(iter(lambda: src.read(CHUNK_SIZE), b""), digest)
        if written != digest:
            raise InvalidInput(
                f"cannot store artifact {source}: the file changed while it was being copied"
            )
        logger.debug("stored artifact %s from %s", digest, source)
        return digest

    def write(self, chunks: Iterable[bytes], digest: str) -> str:
        """Store the bytes of ``chunks`` as the blob ``digest`` and return their sha256; when
        that is not ``digest`` nothing is stored (the caller says what went wrong). An exception
        raised by ``chunks`` leaves no file behind either."""
        with _writing(self._root):
            return self._write(chunks, self.path_for(digest), digest)

    def verified_path(self, digest: str) -> Path:
        path = self.path_for(digest)
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise ArtifactCorrupt(str(path), digest, MISSING) from None
        except OSError as exc:
            raise DockyardError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc
        if actual != digest:
            raise ArtifactCorrupt(str(path), digest, actual)
        return path

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def remove(self, digest: str) -> None:
        with _writing(self._root):
            self.path_for(digest).unlink(missing_ok=True)
        logger.info("removed unused artifact %s", digest)

    def remove_stale_temps(self, is_alive: Callable[[int], bool]) -> list[Path]:
        """Delete the temp files of writes whose process is gone (killed mid-copy); return them.

        A temp file is named after the process writing it; one whose name carries no process id
        (written by an older Dockyard) counts as gone.
        """
        removed = []
        for path in self._root.glob(f"??/{TEMP_PREFIX}*"):
            owner = path.name[len(TEMP_PREFIX) :].partition("-")[0]
            if owner.isdigit() and is_alive(int(owner)):
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
        if removed:
            logger.info("removed %d unfinished artifact writes of stopped processes", len(removed))
        return removed

    def digests(self) -> set[str]:
        if not self._root.is_dir():
            return set()
        return {
            path.name
            for path in self._root.glob("??/*")
            if DIGEST_PATTERN.match(path.name) and path.parent.name == path.name[:2]
        }

    def _matches(self, path: Path, digest: str) -> bool:
        """Whether an existing blob still has the right bytes; a corrupt one is replaced."""
        try:
            return file_sha256(path) == digest
        except OSError:
            return False

    def _write(self, chunks: Iterable[bytes], target: Path, digest: str) -> str:
        folder = target.parent
        is_new_folder = not folder.is_dir()
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if is_new_folder:
            _fsync_folder(folder.parent)
        # mkstemp creates the file with mode 0600 already; chmod states it against any umask.
        handle, temp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=folder)
        temp = Path(temp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            written = hasher.hexdigest()
            if written != digest:
                temp.unlink()
                return written
            os.chmod(temp, SECRET_FILE_MODE)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_folder(folder)
        return written


def _fsync_folder(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _reading(source: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InvalidInput(f"cannot read artifact source {source}: {exc.strerror or exc}") from exc


@contextmanager
def _writing(root: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DockyardError(
            f"cannot write to artifact store {root}: {exc.strerror or exc}; "
            "check that the folder is writable and the disk has space"
        ) from exc
