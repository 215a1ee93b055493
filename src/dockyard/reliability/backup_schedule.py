"""Scheduled backups (``backup_every``, ``backup_keep``), run by the monitoring process.

Of the servers sharing a home, the one whose monitoring process holds ``run/backup.lock`` takes
them (the others try again each interval), into the home's ``backups`` folder, deleting the
oldest beyond ``backup_keep``. With ``DOCKYARD_BACKUP_PASSPHRASE`` in the server's environment
they are encrypted and hold the secrets. A failed backup is logged and tried again next interval.
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
    return [BackupSchedule(workspace, interval, max(1, settings.backup_keep))]


class BackupSchedule:
    """A thread taking a backup every ``interval_s`` while this process holds the lock."""

    def __init__(self, workspace: Workspace, interval_s: float, keep: int) -> None:
        self._workspace = workspace
        self._interval_s = interval_s
        self._keep = keep
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

    def _holds_lock(self) -> bool:
        if self._lock_fd is None:
            self._lock_fd = try_lock(self._workspace.home.root / RUN_FOLDER / LOCK_FILE)
        return self._lock_fd is not None
