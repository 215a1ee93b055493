"""``dockyard backup verify|restore``: a backup checked member by member against its manifest, its
registry opened and its audit chain verified; then, for a restore, read a second time into a new
folder beside the target home (every member checked again) that is renamed into place only once
complete, so a failed or killed restore never leaves a half home under the target's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dockyard.errors import BackupInvalid, Conflict, DockyardError, InvalidInput
from dockyard.home import DIR_MODE, SECRET_FILE_MODE
from dockyard.monitoring.predlog.storage import sync_folder
from dockyard.registry.artifacts import CHUNK_SIZE
from dockyard.services.backup_archive import (
    MANIFEST,
    POSTGRES_MEMBER,
    SQLITE_MEMBER,
    Entry,
    Manifest,
    damaged,
    members,
)
from dockyard.services.backup_crypto import MAGIC, OpeningReader, is_encrypted
from dockyard.services.backup_database import (
    audit_problems,
    opened,
    postgres_check_dump,
    postgres_load,
    stored_versions,
)

SPACE_MARGIN = 1.05
"""Free space a restore wants beyond the backup's bytes (folders, the registry's WAL)."""


@dataclass(frozen=True)
class Verified:
    """A backup that passed every check: its manifest, and what its registry holds."""

    manifest: Manifest
    versions: int
    """Versions in the registry (0 for a PostgreSQL dump, read only once it is loaded)."""
    audit_checked: bool
    """Whether the audit chain was verified (a PostgreSQL dump's is, once restored)."""


def is_encrypted_file(path: Path) -> bool:
    """Whether the backup at ``path`` needs a passphrase."""
    try:
        with path.open("rb") as handle:
            return is_encrypted(handle.read(len(MAGIC)))
    except OSError as exc:
        raise InvalidInput(f"cannot read backup {path}: {exc.strerror or exc}") from exc


def verify_backup(path: Path, passphrase: str = "") -> Verified:
    """Check the backup at ``path``: BackupInvalid naming the first problem found."""
    with tempfile.TemporaryDirectory(prefix="dockyard-verify-") as scratch:
        registry = Path(scratch)

        def keep(name: str) -> Path | None:
            return registry / name if name in (SQLITE_MEMBER, POSTGRES_MEMBER) else None

        manifest = _read(path, passphrase, keep, None, None)
        return _check_registry(manifest, registry)


def restore_backup(
    path: Path, target: Path, passphrase: str = "", database_url: str = ""
) -> Verified:
    """Restore the backup at ``path`` as the new home ``target`` (absent or empty; Conflict
    otherwise), its registry into ``database_url`` for a PostgreSQL backup."""
    target = check_restore_target(target)
    verified = verify_backup(path, passphrase)
    manifest = verified.manifest
    if manifest.database == "postgresql" and not database_url:
        raise InvalidInput(
            "this backup holds a PostgreSQL registry: give --database-url of a new, empty "
            "PostgreSQL database to restore it into"
        )
    if manifest.database == "sqlite" and database_url:
        raise InvalidInput(
            "this backup holds a SQLite registry, restored as the home's dockyard.db: "
            "--database-url is for PostgreSQL backups only"
        )
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < manifest.total_bytes * SPACE_MARGIN:
        raise DockyardError(
            f"not enough space to restore into {target.parent}: the backup holds "
            f"{manifest.total_bytes} bytes, {free} are free"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
    try:
        _read(path, passphrase, lambda name: staging / name, staging, manifest)
        if manifest.database == "postgresql":
            dump = staging / POSTGRES_MEMBER
            postgres_load(database_url, dump)
            dump.unlink()
            verified = _check_database(manifest, database_url)
        else:
            verified = _check_database(manifest, f"sqlite:///{staging / SQLITE_MEMBER}")
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()
        os.rename(staging, target)
        sync_folder(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return verified


def check_restore_target(target: Path) -> Path:
    """``target`` as an absolute path when a restore may write it (absent or an empty folder),
    else Conflict."""
    target = target.expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"{target} is not empty: restore onto a new or empty home folder")
    return target


@contextlib.contextmanager
def _opened(path: Path, passphrase: str) -> Iterator[IO[bytes]]:
    """The backup's archive stream, decrypted when it is encrypted."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read backup {path}: {exc.strerror or exc}") from exc
    with handle:
        if not is_encrypted(handle.read(len(MAGIC))):
            handle.seek(0)
            yield handle
            return
        if not passphrase:
            raise InvalidInput(
                f"backup {path} is encrypted: set DOCKYARD_BACKUP_PASSPHRASE or type the "
                "passphrase when asked"
            )
        handle.seek(0)
        yield io.BufferedReader(OpeningReader(handle, passphrase), CHUNK_SIZE)


def _read(
    path: Path,
    passphrase: str,
    keep: Callable[[str], Path | None],
    root: Path | None,
    expected: Manifest | None,
) -> Manifest:
    """Read every member of the backup, hashing each, writing those ``keep`` names a path for
    (under ``root``, when given: tarfile's data filter checks them against it too); check them
    against the manifest (``expected``: known already, each member is checked against it before
    it is written). Returns the manifest."""
    listed = {entry.path: entry for entry in expected.files} if expected else {}
    found: dict[str, Entry] = {}
    manifest: Manifest | None = None
    with _opened(path, passphrase) as stream, damaged():
        for member in members(stream, root):
            if manifest is not None:
                raise BackupInvalid(f"the backup holds {member.name!r} after its manifest")
            if member.name == MANIFEST:
                manifest = Manifest.from_json(member.data.read())
                continue
            if member.name in found:
                raise BackupInvalid(f"the backup holds {member.name!r} twice")
            if expected is not None:
                entry = listed.get(member.name)
                if entry is None or entry.size != member.size:
                    raise BackupInvalid(f"the backup's {member.name!r} does not match its manifest")
            destination = keep(member.name)
            found[member.name] = _copy(member.name, member.data, member.size, destination)
    if manifest is None:
        raise BackupInvalid(
            "the backup has no manifest: it is incomplete (cut short while written or copied)"
        )
    _compare(manifest, found)
    return manifest


def _copy(name: str, data: IO[bytes], size: int, destination: Path | None) -> Entry:
    """Hash ``data`` (``size`` bytes), writing it to ``destination`` when one is given."""
    hasher = hashlib.sha256()
    out = None
    if destination is not None:
        free = shutil.disk_usage(destination.parent if destination.parent.exists() else "/").free
        if size > free:
            raise DockyardError(f"not enough space for the backup's {name!r} ({size} bytes)")
        for folder in reversed(destination.parents[: len(Path(name).parents) - 1]):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)  # each level 0700, as in a home
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        out = os.fdopen(os.open(destination, flags, SECRET_FILE_MODE), "wb")
    with out or contextlib.nullcontext():
        read = 0
        while chunk := data.read(CHUNK_SIZE):
            read += len(chunk)
            hasher.update(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    return Entry(name, read, hasher.hexdigest())


def _compare(manifest: Manifest, found: dict[str, Entry]) -> None:
    """The first difference between the manifest and the members read, as BackupInvalid."""
    listed = {entry.path: entry for entry in manifest.files}
    if len(listed) != len(manifest.files):
        raise BackupInvalid("the backup's manifest lists a file twice")
    for name, entry in listed.items():
        got = found.get(name)
        if got is None:
            raise BackupInvalid(f"the backup's manifest lists {name!r}, which it does not hold")
        if got.size != entry.size:
            raise BackupInvalid(
                f"the backup's {name!r} holds {got.size} bytes, its manifest says {entry.size}"
            )
        if got.sha256 != entry.sha256:
            raise BackupInvalid(f"the backup's {name!r} does not match its manifest's SHA-256")
    extra = sorted(found.keys() - listed.keys())
    if extra:
        raise BackupInvalid(f"the backup holds {extra[0]!r}, which its manifest does not list")


def _check_registry(manifest: Manifest, folder: Path) -> Verified:
    if manifest.database == "postgresql":
        if POSTGRES_MEMBER not in {entry.path for entry in manifest.files}:
            raise BackupInvalid("the backup holds no registry (registry.pgdump)")
        postgres_check_dump(folder / POSTGRES_MEMBER)
        return Verified(manifest, 0, audit_checked=False)
    if SQLITE_MEMBER not in {entry.path for entry in manifest.files}:
        raise BackupInvalid("the backup holds no registry (dockyard.db)")
    return _check_database(manifest, f"sqlite:///{folder / SQLITE_MEMBER}")


def _check_database(manifest: Manifest, url: str) -> Verified:
    """The registry opens, its audit chain verifies, every version's artifact is in the backup."""
    try:
        with opened(url) as engine:
            problems = audit_problems(engine)
            versions = stored_versions(engine)
    except BackupInvalid:
        raise
    except DockyardError as exc:
        raise BackupInvalid(f"the backup's registry cannot be opened: {exc.message}") from None
    if problems:
        raise BackupInvalid(f"the backup's audit trail does not verify: {problems[0]}")
    held = {entry.path for entry in manifest.files}
    for version in versions:
        if f"artifacts/{version.digest[:2]}/{version.digest}" not in held:
            raise BackupInvalid(
                f"the backup lacks version {version.model}:{version.version}'s artifact "
                f"sha256:{version.digest}"
            )
    return Verified(manifest, len(versions), audit_checked=True)
