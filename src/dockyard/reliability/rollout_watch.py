"""The rollout watch: rolls a canary or shadow candidate back when it crosses its limits; run by
the monitoring process."""

from __future__ import annotations

from pathlib import Path

from dockyard.config import Settings
from dockyard.reliability.monitor_process import BackgroundJob
from dockyard.services.workspace import Workspace


def rollout_watch(
    workspace: Workspace, settings: Settings, metrics: Path | None
) -> list[BackgroundJob]:
    """The job judging ``workspace``'s active rollouts from the server's ``metrics`` folder."""
    return []
