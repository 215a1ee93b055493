"""Scheduled backups (``backup_every``, ``backup_keep``), run by the monitoring process."""

from __future__ import annotations

from dockyard.config import Settings
from dockyard.reliability.monitor_process import BackgroundJob
from dockyard.services.workspace import Workspace


def backup_schedule(workspace: Workspace, settings: Settings) -> list[BackgroundJob]:
    """The job taking ``workspace``'s scheduled backups; none when ``backup_every`` is unset."""
    return []
