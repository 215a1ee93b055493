"""Rollouts as stored: at most one ``active`` per model, ended once (promoted, aborted or rolled
back), each step appending its audit entries in the step's own transaction so the audit head
moves with every change a following server must notice.

``active_rollouts`` is what serving reads: which candidate versions to load and how to route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from dockyard.errors import Conflict, NotFound
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import Rollout
from dockyard.registry.store import lock_model, point_alias, utc_now
from dockyard.registry.tables import rollouts

ACTIVE = "active"
PROMOTED = "promoted"
ABORTED = "aborted"
ROLLED_BACK = "rolled_back"
ENDED = (PROMOTED, ABORTED, ROLLED_BACK)
CANARY = "canary"
SHADOW = "shadow"
MODES = (CANARY, SHADOW)


@dataclass(frozen=True)
class RolloutPlan:
    """What a new rollout will be, before it has a number."""

    model: str
    alias: str
    stable: int
    candidate: int
    mode: str
    percent: int
    sticky: str | None = None


def active_rollouts(engine: Engine) -> list[Rollout]:
    """Every active rollout, oldest first: one cheap query, no lock."""
    statement = select(rollouts).where(rollouts.c.state == ACTIVE).order_by(rollouts.c.id)
    with database_errors(engine), engine.connect() as connection:
        return [_rollout(row) for row in connection.execute(statement)]


class RolloutStore:
    """The ``rollouts`` table; every change appends its audit entries in its transaction."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def start(
        self, plan: RolloutPlan, started_by: str, audit: Callable[[Rollout], AuditEntry]
    ) -> Rollout:
        """Store ``plan`` as the model's active rollout with the entry ``audit(rollout)``;
        Conflict while the model has one already (two racing starts: the model's row lock
        makes the second see the first)."""
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            lock_model(connection, plan.model)
            running = _active_row(connection, plan.model)
            if running is not None:
                raise Conflict(
                    f"{plan.model} has an active {running.mode} rollout of version "
                    f"{running.candidate} already (rollout {running.id}): promote or abort it "
                    f"first (dockyard rollout promote|abort {plan.model})"
                )
            values = {
                "model": plan.model,
                "alias": plan.alias,
                "stable": plan.stable,
                "candidate": plan.candidate,
                "mode": plan.mode,
                "percent": plan.percent,
                "sticky": plan.sticky,
                "state": ACTIVE,
                "started_by": started_by,
                "started_at": self._clock(),
            }
            new_id = connection.execute(
                insert(rollouts).values(**values).returning(rollouts.c.id)
            ).scalar_one()
            started = _rollout(_row(connection, new_id))
            append(connection, audit(started), started.started_at)
            return started

    def current(self, model: str) -> Rollout:
        """The model's active rollout, else its latest one; NotFound when it never had one."""
        statement = select(rollouts).where(rollouts.c.model == model)
        with database_errors(self._engine), self._engine.connect() as connection:
            row = (
                _active_row(connection, model)
                or connection.execute(statement.order_by(rollouts.c.id.desc()).limit(1)).first()
            )
        if row is None:
            raise NotFound(
                f"{model} has no rollout: start one with dockyard rollout start {model} "
                f"--version N --canary PERCENT (POST /api/models/{model}/rollouts)"
            )
        return _rollout(row)

    def end(
        self,
        rollout_id: int,
        state: str,
        ended_by: str,
        reason: str,
        audit: Callable[[Rollout], Sequence[AuditEntry]],
        *,
        move_alias: bool = False,
    ) -> Rollout:
        """End the active rollout ``rollout_id`` in ``state`` (with ``move_alias``, pointing its
        alias at the candidate in the same transaction), appending ``audit(ended)``; Conflict
        when it ended already, so of two processes ending it one does and the other learns."""
        if state not in ENDED:
            raise ValueError(f"not an end state: {state!r}")
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            model = connection.execute(
                select(rollouts.c.model).where(rollouts.c.id == rollout_id)
            ).scalar_one_or_none()
            if model is None:
                raise NotFound(f"no rollout {rollout_id}")
            lock_model(connection, model)
            found = _rollout(_row(connection, rollout_id))
            if not found.is_active:
                raise Conflict(
                    f"rollout {found.id} of {found.model}:{found.candidate} was {found.state} "
                    f"already, by {found.ended_by}"
                )
            now = self._clock()
            connection.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout_id)
                .values(state=state, ended_by=ended_by, ended_at=now, reason=reason)
            )
            if move_alias:
                point_alias(connection, found.model, found.alias, found.candidate)
            ended = _rollout(_row(connection, rollout_id))
            for entry in audit(ended):
                append(connection, entry, now)
            return ended


def _active_row(connection: Connection, model: str) -> Row[Any] | None:
    return connection.execute(
        select(rollouts).where(rollouts.c.model == model, rollouts.c.state == ACTIVE)
    ).first()


def _row(connection: Connection, rollout_id: int) -> Row[Any]:
    return connection.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one()


def _rollout(row: Row[Any]) -> Rollout:
    return Rollout(
        id=row.id,
        model=row.model,
        alias=row.alias,
        stable=row.stable,
        candidate=row.candidate,
        mode=row.mode,
        percent=row.percent,
        state=row.state,
        started_by=row.started_by,
        started_at=row.started_at,
        sticky=row.sticky,
        ended_by=row.ended_by,
        ended_at=row.ended_at,
        reason=row.reason,
    )
