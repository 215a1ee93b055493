"""``dockyard backup create``: a consistent snapshot of a home taken while servers serve and write.

The registry first (SQLite's online backup API or ``pg_dump``: one consistent snapshot), then
what it refers to, which is never deleted while referred to: every version's artifact (content
addressed, its SHA-256 checked as it is copied; from a shared bucket, fetched through the store),
then the prediction log's and the labels'
complete segments (written under a temporary name and linked into place; one that a compaction
deletes meanwhile is found again in the merged segment that replaced it), the config file when it
lies in the home, and the secrets only when the backup is encrypted under a passphrase. The file is
written under a temporary name (``.NAME.PID.partial``) and renamed when complete and on disk: a
backup killed midway leaves no file under its final name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dockyard.errors import ArtifactCorrupt, Conflict, DockyardError
from dockyard.home import SECRET_FILE_MODE, Home, process_is_alive
from dockyard.monitoring.predlog.layout import PREDICTIONS, day_folders
from dockyard.monitoring.predlog.storage import listing, sync_folder
from dockyard.registry.artifacts import MISSING, LocalArtifactStore
from dockyard.services.backup_archive import (
    POSTGRES_MEMBER,
    SQLITE_MEMBER,
    ArchiveWriter,
    Manifest,
)
from dockyard.services.backup_crypto import SealingWriter
from dockyard.services.backup_database import (
    database_kind,
    postgres_dump,
    sqlite_snapshot,
    stored_versions,
)
from dockyard.services.staging import staging_folder
from dockyard.services.workspace import Workspace

NAME_PREFIX = "dockyard-backup-"
PLAIN_SUFFIX = ".tar.gz"
ENCRYPTED_SUFFIX = ".tar.gz.enc"
BACKUP_NAME = re.compile(r"^dockyard-backup-\d{8}T\d{6}\.\d{3}Z\.tar\.gz(\.enc)?$")
PARTIAL = re.compile(r"^\.(.+)\.(\d+)\.partial$")
LABELS = "labels"
LOG_ROUNDS = 20
"""Listings of a log folder before giving up on one that never stops being compacted."""
WITHOUT_SECRETS = (
    "secrets not included (use --encrypt to include them): a home restored from this backup "
    "has no API-key hash key (every API key, the admin key included, stops working: create new "
    "ones), no encryption key file (settings sealed with it are lost), no pseudonym key (new "
    "pseudonyms differ from the logged ones) and no signing keys"
)


@dataclass(frozen=True)
class Backup:
    """A backup written: where, and what it holds."""

    path: Path
    manifest: Manifest


def create_backup(workspace: Workspace, out: Path | None = None, passphrase: str = "") -> Backup:
    """Write a backup of ``workspace``'s home to ``out`` (default: a new timestamped file in the
    home's ``backups`` folder); with a ``passphrase`` it is encrypted and holds the secrets."""
    home = workspace.home
    now = datetime.now(UTC)
    target = out or home.backups / backup_name(now, encrypted=bool(passphrase))
    if target.exists():
        raise Conflict(f"{target} exists already: give another --out")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_partials(target.parent)
    temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with (
            staging_folder(home.tmp, "backup") as staging,
            os.fdopen(
                os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE), "wb"
            ) as raw,
        ):
            sealing = SealingWriter(raw, passphrase) if passphrase else None
            writer = ArchiveWriter(sealing or raw)
            kind = _add_registry(workspace, writer, staging)
            _add_artifacts(workspace, writer)
            _add_home_files(workspace, writer, with_secrets=bool(passphrase))
            manifest = Manifest(
                created=now.isoformat(timespec="seconds"),
                dockyard_version=_version(),
                database=kind,
                has_secrets=bool(passphrase),
                files=tuple(writer.entries),
            )
            writer.finish(manifest)
            if sealing is not None:
                sealing.close()  # its last chunk: without it the file reads as truncated
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, target)
        sync_folder(target.parent)
    except OSError as exc:
        raise DockyardError(
            f"cannot write backup {target}: {exc.strerror or exc}; check the folder is "
            "writable and the disk has space"
        ) from exc
    finally:
        temp.unlink(missing_ok=True)
    return Backup(target, manifest)


def backup_name(now: datetime, *, encrypted: bool) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
    return f"{NAME_PREFIX}{stamp}{ENCRYPTED_SUFFIX if encrypted else PLAIN_SUFFIX}"


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete the oldest backups Dockyard named in ``folder`` beyond the newest ``keep``."""
    found = sorted(path for path in folder.iterdir() if BACKUP_NAME.match(path.name))
    removed = found[: max(0, len(found) - keep)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def stale_partials(folder: Path) -> list[Path]:
    """Unfinished backups in ``folder`` whose writing process is gone."""
    if not folder.is_dir():
        return []
    return [
        path
        for path in sorted(folder.iterdir())
        if (match := PARTIAL.match(path.name)) and not process_is_alive(int(match[2]))
    ]


def remove_partials(folder: Path) -> list[Path]:
    removed = stale_partials(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _add_registry(workspace: Workspace, writer: ArchiveWriter, staging: Path) -> str:
    url = workspace.settings.effective_database_url()
    kind = database_kind(url)
    if kind == "postgresql":
        dump = staging / POSTGRES_MEMBER
        postgres_dump(url, dump)
        writer.add_file(dump, POSTGRES_MEMBER)
    else:
        snapshot = staging / SQLITE_MEMBER
        sqlite_snapshot(url, snapshot)
        writer.add_file(snapshot, SQLITE_MEMBER)
    return kind


def _add_artifacts(workspace: Workspace, writer: ArchiveWriter) -> None:
    """Every version's artifact, read after the snapshot: a version in the snapshot had its
    artifact stored before it was committed, and an artifact a version uses is never deleted.
    A shared bucket's blobs are fetched through the store (its verified cache); a local one's
    are read in place, hashed once, as they are copied."""
    store = workspace.artifacts
    for digest in sorted({v.digest for v in stored_versions(workspace.store.engine)}):
        if isinstance(store, LocalArtifactStore):
            path = store.path_for(digest)
        else:
            path = store.verified_path(digest)
        name = f"artifacts/{digest[:2]}/{digest}"
        try:
            entry = writer.add_file(path, name)
        except FileNotFoundError:
            raise ArtifactCorrupt(str(path), digest, MISSING) from None
        if entry.sha256 != digest:
            raise ArtifactCorrupt(str(path), digest, entry.sha256)


def _add_home_files(workspace: Workspace, writer: ArchiveWriter, *, with_secrets: bool) -> None:
    home = workspace.home
    for day in day_folders(home.root / PREDICTIONS):
        _add_segments(home, writer, day)
    for model in _folders(home.root / LABELS):
        _add_segments(home, writer, model)
    config = _config_in_home(workspace)
    if config is not None:
        writer.add_file(config, config.name)
    if with_secrets:
        for path in sorted(home.secrets.iterdir()):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                writer.add_file(path, f"secrets/{path.name}")


def _folders(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def _add_segments(home: Home, writer: ArchiveWriter, folder: Path) -> None:
    """Every segment of ``folder`` present when it is first listed, or the merged segment that
    replaced it: listed again until a round finds every file it listed (a merged segment and the
    originals it covers may both be added: readers count covered originals once)."""
    done: set[Path] = set()
    for _ in range(LOG_ROUNDS):
        missed = False
        for segment in listing(folder):
            if segment.path in done:
                continue
            try:
                writer.add_file(segment.path, segment.path.relative_to(home.root).as_posix())
            except FileNotFoundError:
                missed = True
                continue
            done.add(segment.path)
        if not missed:
            return
    raise DockyardError(f"the prediction log folder {folder} kept changing: try the backup again")


def _config_in_home(workspace: Workspace) -> Path | None:
    root = workspace.home.root.resolve()
    for source in workspace.settings.sources.values():
        if source.startswith("file "):
            path = Path(source.removeprefix("file ")).resolve()
            if path.parent == root and path.suffix == ".toml" and path.is_file():
                return path
    return None


def _version() -> str:
    from dockyard import __version__

    return __version__
