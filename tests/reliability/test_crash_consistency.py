"""Crash consistency: a registration, an alias move and a backup each killed with SIGKILL at
several moments leave a home that ``dockyard doctor`` finds consistent once the leftovers of the
dead process are swept (as every start does), where every version loads, the audit chain verifies,
and no backup file exists under its final name unless it is complete (an unfinished one is a
hidden ``.partial`` file that ``dockyard doctor --repair`` deletes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.services.backup_restore import verify_backup
from dockyard.services.doctor import examine
from dockyard.services.register import Registration, register
from homes import open_unprotected

DELAYS_S = (0.05, 0.3, 0.9)
"""After the child says it is ready (imports done): early, mid-way, later in its loop."""
SCRIPT = """
import sys, dataclasses, itertools
import numpy as np
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from dockyard.config import load_settings
from dockyard.services.workspace import Workspace
from dockyard.services.register import Registration, register
from dockyard.services.changes import set_alias
from dockyard.services.backup import create_backup
from dockyard.security.principals import local_user

settings = load_settings({"home": sys.argv[2]}, env={})
workspace = Workspace.open(dataclasses.replace(settings, governance={"protected_aliases": []}))
x = np.random.default_rng(0).normal(size=(60, 30))
model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
print("ready", flush=True)
for i in itertools.count():
    if sys.argv[1] == "register":
        register(workspace, model, Registration("lr", reference_data=x[:20]))
    elif sys.argv[1] == "alias":
        set_alias(workspace, local_user(), "lr", "staging", 1 + i % 2)
    else:
        create_backup(workspace)
"""


@pytest.fixture
def two_versions(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    workspace = open_unprotected(home)
    for _ in range(2):
        register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    return home


@pytest.mark.parametrize("operation", ["register", "alias", "backup"])
def test_a_killed_operation_leaves_a_consistent_home(two_versions: Path, operation: str) -> None:
    for delay in DELAYS_S:
        with subprocess.Popen(
            [sys.executable, "-c", SCRIPT, operation, str(two_versions)],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(delay)
            os.kill(child.pid, signal.SIGKILL)
        settings = open_unprotected(two_versions).settings  # the start-up sweep
        # What is left can only be a dead process's leftover, which --repair deletes.
        assert [p.what for p in examine(settings) if p.fix is None] == []
        workspace = open_unprotected(two_versions)
        for version in workspace.store.list_versions("lr"):
            workspace.load(version)
        for backup in (two_versions / "backups").iterdir():
            if not backup.name.startswith("."):
                verify_backup(backup)
