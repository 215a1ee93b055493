"""The ``[governance]`` table's history: opening a home records the policy in the audit trail when
it differs from the last one recorded, once however many processes start with it."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from clirun import run_cli
from dockyard.config import Settings, load_settings
from dockyard.governance.policy_changes import POLICY_ACTION, policy_digest, record_policy
from dockyard.registry.audit import AuditRecord, read_entries
from dockyard.registry.audit_chain import verify
from dockyard.security.principals import local_user
from dockyard.services.workspace import Workspace

THREADS = 4


def settings(home: Path, **table: Any) -> Settings:
    return dataclasses.replace(load_settings({"home": home}, env={}), governance=table)


def changes(workspace: Workspace) -> list[AuditRecord]:
    return [e for e in read_entries(workspace.store.engine) if e.action == POLICY_ACTION]


def test_a_home_without_a_policy_records_nothing(workspace: Workspace) -> None:
    assert changes(workspace) == []


def test_each_change_of_the_policy_is_recorded_once(home: Path) -> None:
    strict = {"protected_aliases": ["production", "canary"], "retention": "30d"}
    Workspace.open(settings(home, **strict))
    Workspace.open(settings(home, retention="30d", protected_aliases=["production", "canary"]))
    Workspace.open(settings(home))  # back to the defaults
    workspace = Workspace.open(settings(home))

    first, second = changes(workspace)
    assert (first.actor, first.target) == (local_user().actor, "governance")
    assert first.details == {"sha256": policy_digest(strict), "policy": strict}
    assert second.details == {"sha256": policy_digest({}), "policy": {}}
    assert verify(workspace.store.engine) == []


def test_toml_values_are_recorded_as_json(home: Path) -> None:
    workspace = Workspace.open(settings(home, review_by=date(2027, 1, 31)))

    (recorded,) = changes(workspace)
    assert recorded.details["policy"] == {"review_by": "2027-01-31"}


def test_processes_starting_together_record_a_new_policy_once(workspace: Workspace) -> None:
    new = settings(workspace.home.root, protected_aliases=["production", "shadow"])
    barrier = threading.Barrier(THREADS, timeout=30)

    def start(_: int) -> bool:
        barrier.wait()
        return record_policy(workspace.store.engine, new, local_user())

    with ThreadPoolExecutor(THREADS) as pool:
        appended = list(pool.map(start, range(THREADS)))

    assert appended.count(True) == 1
    assert len(changes(workspace)) == 1


def test_a_command_run_with_a_new_config_file_records_it(
    capsys: pytest.CaptureFixture[str],
    workspace: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[governance]\nprotected_aliases = ["production"]\nretention = "90d"\n')
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config))

    code, _, err = run_cli(capsys, "keys", "list", "--home", str(workspace.home.root))

    assert code == 0, err
    (recorded,) = changes(workspace)
    assert recorded.details["policy"] == {"protected_aliases": ["production"], "retention": "90d"}
