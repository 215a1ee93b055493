"""Scheduled backups: ``dockyard serve --backup-every 1s --backup-keep 2`` keeps taking backups
into the home's ``backups`` folder while it serves, keeps the newest two, and each verifies."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.services.backup import BACKUP_NAME
from dockyard.services.backup_restore import verify_backup
from servers import Server

pytestmark = pytest.mark.e2e
WAIT_S = 30.0


def test_the_server_takes_backups_and_keeps_the_newest(
    served: Path, start_server: Callable[..., Server], unprotected_config: Path
) -> None:
    server = start_server(served, "--workers", "1", "--backup-every", "1s", "--backup-keep", "2")
    folder = served / "backups"
    seen: set[str] = set()
    deadline = time.monotonic() + WAIT_S
    while len(seen) < 4 and time.monotonic() < deadline:
        names = {p.name for p in folder.iterdir() if BACKUP_NAME.match(p.name)}
        assert len(names) <= 2
        seen |= names
        time.sleep(0.1)
    assert len(seen) >= 4, f"only {len(seen)} backups in {WAIT_S} s"
    server.stop()
    for path in sorted(folder.iterdir()):
        if BACKUP_NAME.match(path.name):
            assert verify_backup(path).versions == 1
