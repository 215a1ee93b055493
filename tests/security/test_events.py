"""The security event log: alike events in one batch become one row with a count and one log
line, distinct ones stay apart, the queue is bounded, and old rows are deleted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from dockyard.security import events as events_module
from dockyard.security.events import RETENTION, EventLog, SecurityEvent
from dockyard.services.workspace import Workspace


def _event(
    kind: str = "auth_failed", client: str = "10.0.0.1:5000", **extra: object
) -> SecurityEvent:
    values: dict[str, object] = {
        "kind": kind,
        "principal": "",
        "key_id": "",
        "method": "POST",
        "path": "/v2/models/lr/infer",
        "status": 401,
        "client": client,
        "detail": "invalid API key",
    }
    return SecurityEvent(**{**values, **extra})  # type: ignore[arg-type]


def test_a_flood_is_one_row_with_a_count_and_one_log_line(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    log = workspace.events
    with caplog.at_level(logging.WARNING, logger="dockyard.security"):
        for port in range(1000):
            log.record(_event(client=f"10.0.0.1:{port}"))
        log.record(_event(client="10.0.0.2:1"))
        log.record(_event(kind="forbidden", status=403, principal="key:bot", key_id="abc"))
    assert log.flush() == 3
    assert len(caplog.records) == 3

    stored = {(event.kind, event.client.rpartition(":")[0]): event for event in log.query()}
    assert stored[("auth_failed", "10.0.0.1")].count == 1000
    assert stored[("auth_failed", "10.0.0.2")].count == 1
    assert stored[("forbidden", "10.0.0.1")].count == 1
    assert log.flush() == 0


def test_the_queue_is_bounded(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "QUEUE_LIMIT", 5)
    log = workspace.events
    for address in range(8):
        log.record(_event(client=f"10.0.1.{address}:1"))
    assert log.dropped == 3
    assert log.flush() == 5


def test_rows_past_the_retention_are_deleted(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    old = EventLog(workspace.store.engine, clock=lambda: now)
    old.record(_event(at=now - RETENTION - timedelta(days=1)))
    old.record(_event(at=now - RETENTION + timedelta(days=1), client="10.0.0.9:1"))
    old.flush()  # the first flush prunes too, but both rows are written in the same batch
    later = EventLog(workspace.store.engine, clock=lambda: now)
    later.flush()
    assert [event.client for event in later.query()] == ["10.0.0.9:1"]
