"""This home's prediction log mirrored to its machine's folder of the bucket (``bucket``): what the
log's own readers would read is uploaded, and what is gone here is deleted there.

A pass lists the home's settled segments — named segments only (a writer's or a rewrite's
temporary file is not one), less those a merged segment covers (``storage.visible``: compaction
deletes them next), over two listings that agree (``storage.read_settled``: a listing made while a
compaction links its merged file and deletes the originals may see neither). Segments are linked
or renamed into place whole, so each one listed is complete. It uploads those the bucket lacks
or holds with other bytes (an erasure or a purge rewrote it, under the same name), then deletes
the objects of this machine's folder with no segment here any more (merged, purged, erased, or
rewritten away). It never touches another machine's folder, nor an object of its own that is not a
segment of the layout. Passes of one home (the monitoring job, an erasure's command) take turns
under ``run/log-mirror.lock``; the mirror remembers what it sent (inode, size, time of change,
ETag) so a pass over an unchanged log only lists.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from dockyard.config import Settings
from dockyard.home import DIR_MODE, Home
from dockyard.monitoring.predlog.bucket import Listed, LogBucket
from dockyard.monitoring.predlog.layout import DAY_NAME, PREDICTIONS
from dockyard.monitoring.predlog.rewrites import exclusive_lock
from dockyard.monitoring.predlog.storage import listing, read_settled, visible
from dockyard.registry.refs import NAME_PATTERN

RUN_FOLDER = "run"
LOCK_FILE = "log-mirror.lock"
LOCK_WAIT_S = 300.0
"""How long a pass waits for another pass of the same home to finish."""

Stat = tuple[int, int, int]
"""A file's inode, size and time of change: an erasure's rewrite (a new file renamed over the
old one) changes the inode."""


class Mirrored(NamedTuple):
    uploaded: int
    """Segments uploaded: new ones, and ones rewritten here or altered in the bucket."""
    deleted: int
    """Objects of this machine's folder deleted: their segment is gone here."""
    kept: int
    """Segments the bucket held already as they are here."""


class Sent(NamedTuple):
    stat: Stat
    etag: str


class LogMirror:
    """Mirrors ``home``'s prediction log to ``machine``'s folder of ``bucket``; see the module."""

    def __init__(self, bucket: LogBucket, home: Home, machine: str) -> None:
        self._bucket = bucket
        self._home = home
        self._machine = machine
        self._sent: dict[str, Sent] = {}

    @classmethod
    def from_settings(cls, settings: Settings, home: Home) -> LogMirror:
        """The mirror ``prediction_log_url`` and ``log_machine`` describe."""
        return cls(LogBucket.from_settings(settings), home, settings.effective_log_machine())

    @property
    def url(self) -> str:
        """The machine's folder in the bucket."""
        return f"{self._bucket.url}/{self._machine}"

    def run(self, wait_s: float = LOCK_WAIT_S) -> Mirrored:
        """One pass (after the home's pass in progress, if any); a failing bucket raises its
        translated error, and the next pass picks up where this one stopped."""
        run = self._home.root / RUN_FOLDER
        run.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with exclusive_lock(run, LOCK_FILE, wait_s):
            return self._pass()

    def _pass(self) -> Mirrored:
        local = settled_segments(self._home.root / PREDICTIONS)
        remote = self._bucket.objects(self._machine)
        uploaded = kept = 0
        for name, path in local.items():
            if self._ship(name, path, remote.get(name)):
                uploaded += 1
            else:
                kept += 1
        gone = sorted(remote.keys() - local.keys())
        for name in gone:
            self._bucket.delete(self._machine, name)
        for name in self._sent.keys() - local.keys():
            del self._sent[name]
        return Mirrored(uploaded, len(gone), kept)

    def _ship(self, name: str, path: Path, listed: Listed | None) -> bool:
        """Upload the segment ``name`` unless the bucket holds it as it is here; whether it did.
        A segment gone meanwhile is left to the next pass."""
        sent = self._sent.get(name)
        if sent is not None and listed is not None and sent.etag == listed.etag:
            try:
                if _stat(path.stat()) == sent.stat:
                    return False
            except FileNotFoundError:
                return False
        try:
            with path.open("rb") as handle:
                stat = _stat(os.fstat(handle.fileno()))
                data = handle.read()
        except FileNotFoundError:
            return False
        digest = hashlib.sha256(data).hexdigest()
        if (
            sent is None
            and listed is not None
            and self._bucket.recorded(self._machine, name) == (digest, len(data))
        ):
            self._sent[name] = Sent(stat, listed.etag)  # sent by an earlier process
            return False
        self._sent[name] = Sent(stat, self._bucket.put(self._machine, name, data, digest))
        return True


def settled_segments(root: Path) -> dict[str, Path]:
    """The segments the log's readers would read in ``root`` (the home's ``predictions``), by
    ``<model>/<day>/<name>``, from two listings that agree."""

    def listed() -> list[tuple[int, Path]]:
        found = []
        for model in _names(root, NAME_PATTERN.match):
            for day in _names(root / model, DAY_NAME.match):
                found += [(s.last, s.path) for s in visible(listing(root / model / day))]
        return found

    found = read_settled(listed, lambda segments, _read: segments, _unread)
    return {f"{path.parent.parent.name}/{path.parent.name}/{path.name}": path for _, path in found}


def _names(folder: Path, matches: Callable[[str], object]) -> list[str]:
    try:
        return sorted(name for name in os.listdir(folder) if matches(name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unread(path: Path) -> pa.Table:
    raise AssertionError(f"a mirror pass lists segments, it does not read {path}")


def _stat(result: os.stat_result) -> Stat:
    return result.st_ino, result.st_size, result.st_mtime_ns
