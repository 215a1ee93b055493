"""Security events: auth failures, refusals, rate-limit hits and unusual request rates.

Each becomes a structured log record at once and a row of the ``security_events`` table soon after:
the server queues them and a background task writes them in batches, so a flood of bad requests
costs the event loop a dict update each, never a database write. Events alike (same kind, caller,
client address and status) within one batch are one row with a count and one log line, so a flood
cannot fill the disk or the log; rows older than ``RETENTION`` are deleted. Keys, tokens and
payloads are never part of an event.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from dockyard.registry.audit import AuditEntry, append_many
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.store import utc_now
from dockyard.registry.tables import security_events

logger = logging.getLogger("dockyard.security")

AUTH_FAILED = "auth_failed"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
RATE_ANOMALY = "rate_anomaly"
QUEUE_LIMIT = 10_000
"""Most distinct events waiting to be written; past it they are counted and dropped."""
RETENTION = timedelta(days=90)
PRUNE_EVERY = timedelta(hours=1)
DETAIL_LIMIT = 500
ANONYMOUS = "anonymous"
"""The actor of an event whose caller is not known (no credentials, or ones that are not valid)."""


@dataclass(frozen=True)
class SecurityEvent:
    kind: str
    principal: str
    key_id: str
    method: str
    path: str
    status: int
    client: str
    detail: str
    at: datetime = field(default_factory=utc_now)
    count: int = 1
    """How many events alike this row stands for (the first one's path and detail are kept)."""

    @property
    def group(self) -> tuple[str, str, str, str, int]:
        """What makes two events alike: kind, caller, client address (not port), status."""
        return (self.kind, self.principal, self.key_id, self.client.rpartition(":")[0], self.status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "principal": self.principal,
            "key_id": self.key_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "client": self.client,
            "detail": self.detail,
            "count": self.count,
        }


class EventLog:
    """Queues events and writes them to the database in batches (``flush``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._queue: dict[tuple[str, str, str, str, int], SecurityEvent] = {}
        self._pruned: datetime | None = None
        self.dropped = 0
        self.listener: Callable[[str], object] | None = None
        """Told the kind of every event recorded, before any coalescing (the worker's metrics)."""

    def record(self, event: SecurityEvent) -> None:
        """Queue ``event`` for the table, logging it when it is the first of its kind in this
        batch; one alike is already queued, count it there."""
        if self.listener is not None:
            self.listener(event.kind)
        queued = self._queue.get(event.group)
        if queued is not None:
            self._queue[event.group] = dataclasses.replace(queued, count=queued.count + 1)
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self._queue[event.group] = event
        logger.warning(
            "security event %s: %s %s -> %d by %s from %s: %s",
            event.kind,
            event.method,
            event.path,
            event.status,
            event.principal or "-",
            event.client or "-",
            event.detail,
            extra={"security_event": event.to_dict()},
        )

    def flush(self) -> int:
        """Write the queued events (and, once an hour, delete those past ``RETENTION``); how many
        rows were written. Called from a thread, never the event loop."""
        batch, self._queue = list(self._queue.values()), {}
        now = self._clock()
        prune = self._pruned is None or now - self._pruned >= PRUNE_EVERY
        if batch or prune:
            with database_errors(self._engine), write_transaction(self._engine) as connection:
                if batch:
                    connection.execute(insert(security_events), [_row(event) for event in batch])
                    append_many(connection, [_audit_entry(event) for event in batch], now)
                if prune:
                    connection.execute(
                        delete(security_events).where(security_events.c.at < now - RETENTION)
                    )
            self._pruned = now if prune else self._pruned
        return len(batch)

    def query(self, since: timedelta | None = None, limit: int = 1000) -> list[SecurityEvent]:
        """The newest ``limit`` events (of the last ``since``), oldest first."""
        statement = select(security_events).order_by(security_events.c.id.desc()).limit(limit)
        if since is not None:
            statement = statement.where(security_events.c.at >= self._clock() - since)
        with database_errors(self._engine), self._engine.connect() as connection:
            rows = connection.execute(statement).all()
        return [
            SecurityEvent(
                kind=row.kind,
                principal=row.principal,
                key_id=row.key_id,
                method=row.method,
                path=row.path,
                status=row.status,
                client=row.client,
                detail=row.detail,
                at=row.at,
                count=row._mapping["count"],  # Row.count is tuple's method
            )
            for row in reversed(rows)
        ]


def _audit_entry(event: SecurityEvent) -> AuditEntry:
    """The audit entry of one stored event row: who was refused what, how often; not the client's
    address nor the detail (kept in ``security_events``, pruned after ``RETENTION``)."""
    return AuditEntry(
        event.principal or ANONYMOUS,
        "security.event",
        f"{event.method} {event.path}",
        details={
            "kind": event.kind,
            "status": event.status,
            "count": event.count,
            "key_id": event.key_id,
        },
    )


def _row(event: SecurityEvent) -> dict[str, Any]:
    values = event.to_dict()
    values["at"] = event.at
    values["path"] = event.path[:DETAIL_LIMIT]
    values["detail"] = event.detail[:DETAIL_LIMIT]
    return values
