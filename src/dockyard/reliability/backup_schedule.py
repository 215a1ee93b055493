"""Scheduled backups (``backup_every``, ``backup_keep``), run by the monitoring process.

Of the servers sharing a home, the one whose monitoring process holds ``run/backup.lock`` takes
them (the others try again each interval), into the home's ``backups`` folder, deleting the
oldest beyond ``backup_keep``. With ``DOCKYARD_BACKUP_PASSPHRASE`` in the server's environment
they are encrypted and hold the secrets. A failed backup is logged and tried again next interval.

With ``backup_url`` set, each run then uploads the kept backups the bucket lacks (each verified
first) and deletes the bucket's oldest beyond ``backup_keep``; a bucket that fails is logged once
per run and the upload tried again next interval, the local backups untouched.
"""

from __future__ import annotations

import logging
import os
import threading

from dockyard.config import Settings
from dockyard.errors import DockyardError, InvalidInput
from dockyard.home import try_lock
from dockyard.monitoring.scheduler import RUN_FOLDER
from dockyard.reliability.monitor_process import BackgroundJob
from dockyard.security.keystore import parse_duration
from dockyard.services.backup import create_backup, prune_backups
from dockyard.services.backup_bucket import BackupBucket, send_backups
from dockyard.services.workspace import Workspace

logger = logging.getLogger("dockyard.backup")
LOCK_FILE = "backup.lock"
PASSPHRASE_ENV = "DOCKYARD_BACKUP_PASSPHRASE"


def backup_schedule(workspace: Workspace, settings: Settings) -> list[BackgroundJob]:
    """The job taking ``workspace``'s scheduled backups; none when ``backup_every`` is unset."""
    if not settings.backup_every:
        return []
    try:
        interval = parse_duration(settings.backup_every).total_seconds()
    except InvalidInput as exc:
        logger.error("no scheduled backups: backup_every: %s", exc)
        return []
    bucket = None
    if settings.backup_url:
        try:
            bucket = BackupBucket.from_settings(settings)
        except DockyardError as exc:  # boto3 missing, a malformed URL: local backups still
            logger.error("scheduled backups are not uploaded to %s: %s", settings.backup_url, exc)
    return [BackupSchedule(workspace, interval, max(1, settings.backup_keep), bucket)]


class BackupSchedule:
    """A thread taking a backup every ``interval_s`` while this process holds the lock."""

    def __init__(
        self,
        workspace: Workspace,
        interval_s: float,
        keep: int,
        bucket: BackupBucket | None = None,
    ) -> None:
        self._workspace = workspace
        self._interval_s = interval_s
        self._keep = keep
        self._bucket = bucket
        self._refused: set[str] = set()
        """Backups whose verification failed: never uploaded, logged once."""
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._thread = threading.Thread(target=self._run, name="dockyard-backups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the backup in progress (a backup is never cut short by a stop)."""
        self._stop.set()
        self._thread.join()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._holds_lock():
                self.run_once()

    def run_once(self) -> None:
        passphrase = os.environ.get(PASSPHRASE_ENV, "")
        try:
            backup = create_backup(self._workspace, passphrase=passphrase)
            removed = prune_backups(self._workspace.home.backups, self._keep)
        except (DockyardError, OSError) as exc:
            logger.error("scheduled backup failed: %s", exc)
            return
        logger.info(
            "scheduled backup written: %s (%d files); %d old backup(s) deleted",
            backup.path,
            len(backup.manifest.files),
            len(removed),
        )
        if self._bucket is not None:
            self._send(self._bucket, passphrase)

    def _send(self, bucket: BackupBucket, passphrase: str) -> None:
        """Upload what the bucket lacks and prune it; any failure is one log record (the
        monitoring process goes on), and what was not sent is sent next interval."""
        try:
            sent, deleted = send_backups(
                bucket, self._workspace.home.backups, self._keep, passphrase, self._refused
            )
        except Exception as exc:  # never the end of the monitoring process
            logger.error(
                "uploading scheduled backups to %s failed (tried again next interval): %s",
                bucket.url,
                exc,
            )
            return
        logger.info(
            "scheduled backups uploaded to %s: %d; %d old one(s) deleted there",
            bucket.url,
            len(sent),
            len(deleted),
        )

    def _holds_lock(self) -> bool:
        if self._lock_fd is None:
            self._lock_fd = try_lock(self._workspace.home.root / RUN_FOLDER / LOCK_FILE)
        return self._lock_fd is not None
