"""Security events: auth failures, refusals, rate-limit hits and unusual request rates.

Each becomes a structured log record at once and a row of the ``security_events`` table soon after:
the server queues them and a background task writes them in batches, so a flood of bad requests
costs the event loop a list append each, never a database write. Keys, tokens and payloads are
never part of an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select

from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.store import utc_now
from dockyard.registry.tables import security_events

logger = logging.getLogger("dockyard.security")

AUTH_FAILED = "auth_failed"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
RATE_ANOMALY = "rate_anomaly"
QUEUE_LIMIT = 10_000
"""Most events waiting to be written; past it they are counted and dropped (still logged)."""
DETAIL_LIMIT = 500


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
        }


class EventLog:
    """Queues events and writes them to the database in batches (``flush``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._queue: list[SecurityEvent] = []
        self.dropped = 0

    def record(self, event: SecurityEvent) -> None:
        """Log ``event`` now and queue it for the table."""
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
        if len(self._queue) < QUEUE_LIMIT:
            self._queue.append(event)
        else:
            self.dropped += 1

    def flush(self) -> int:
        """Write the queued events; how many. Called from a thread, never the event loop."""
        batch, self._queue = self._queue, []
        if batch:
            with database_errors(self._engine), write_transaction(self._engine) as connection:
                connection.execute(insert(security_events), [_row(event) for event in batch])
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
            )
            for row in reversed(rows)
        ]


def _row(event: SecurityEvent) -> dict[str, Any]:
    values = event.to_dict()
    values["at"] = event.at
    values["path"] = event.path[:DETAIL_LIMIT]
    values["detail"] = event.detail[:DETAIL_LIMIT]
    return values
