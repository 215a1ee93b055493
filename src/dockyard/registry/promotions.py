"""Promotion requests (four eyes): a request to point a protected alias at a version stays
``pending`` until an approver decides it. An approval moves the alias in the same transaction as
the decision, with both audit entries: never an approval without its move, nor a move without
its approval."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from dockyard.errors import Conflict, InvalidInput, NotFound
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import lock_model, point_alias, utc_now
from dockyard.registry.tables import promotions

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
STATES = (PENDING, APPROVED, REJECTED)
COMMENT_LENGTH = 4000
MAX_ID = 2**31 - 1
"""The largest id the table's integer column holds; larger ones are asked for, never stored."""


@dataclass(frozen=True)
class Promotion:
    """One request: who asked to point ``alias`` at ``model:version``, the gates' results then
    (``name``, ``passed``, ``detail`` each), and the decision once made."""

    id: int
    model: str
    version: int
    alias: str
    state: str
    requested_by: str
    requested_at: datetime
    comment: str
    gates: list[dict[str, Any]]
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_comment: str | None = None

    @property
    def target(self) -> str:
        """The audit target of the request: ``promotion:7``."""
        return f"promotion:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "requested_at": self.requested_at.isoformat(),
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
        }


class PromotionStore:
    """The ``promotions`` table; every change appends its audit entries in its transaction."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def create(
        self,
        version: ModelVersion,
        alias: str,
        requested_by: str,
        comment: str,
        gates: Sequence[Mapping[str, Any]],
        audit: Callable[[Promotion], AuditEntry],
    ) -> Promotion:
        """Open a pending request to point ``alias`` at ``version``, with the entry
        ``audit(request)``; Conflict while another request for the model's alias is pending."""
        _check_comment(comment)
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            lock_model(connection, version.model)  # one pending request, even when two race
            pending = connection.execute(
                select(promotions).where(
                    promotions.c.model == version.model,
                    promotions.c.alias == alias,
                    promotions.c.state == PENDING,
                )
            ).first()
            if pending is not None:
                raise Conflict(
                    f"promotion {pending.id} of {pending.model}:{pending.version} to @{alias} is "
                    f"pending already (requested by {pending.requested_by}): have an approver "
                    f"approve or reject it first (dockyard approvals list --model {version.model})"
                )
            values = {
                "model": version.model,
                "version": version.version,
                "alias": alias,
                "state": PENDING,
                "requested_by": requested_by,
                "requested_at": self._clock(),
                "comment": comment,
                "gates": [dict(gate) for gate in gates],
            }
            new_id = connection.execute(
                insert(promotions).values(**values).returning(promotions.c.id)
            ).scalar_one()
            created = _promotion(_row(connection, new_id))
            append(connection, audit(created), created.requested_at)
            return created

    def get(self, promotion_id: int) -> Promotion:
        with database_errors(self._engine), self._engine.connect() as connection:
            return _promotion(_row(connection, promotion_id))

    def all(self, model: str | None = None, state: str | None = None) -> list[Promotion]:
        """Requests, newest first, of ``model`` and in ``state`` when given."""
        statement = select(promotions).order_by(promotions.c.id.desc())
        if model is not None:
            statement = statement.where(promotions.c.model == model)
        if state is not None:
            statement = statement.where(promotions.c.state == _check_state(state))
        with database_errors(self._engine), self._engine.connect() as connection:
            return [_promotion(row) for row in connection.execute(statement)]

    def decide(
        self,
        promotion_id: int,
        *,
        approve: bool,
        decided_by: str,
        comment: str,
        audit: Callable[[Promotion], Sequence[AuditEntry]],
    ) -> Promotion:
        """Approve (pointing the alias at the version) or reject a pending request, appending
        ``audit(decided)`` (an approval: its entry, then the alias move's) in the same
        transaction; Conflict when it was decided already or the version cannot take the alias
        (archived since), which leaves it pending."""
        _check_comment(comment)
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            found = check_pending(_promotion(_row(connection, promotion_id, lock=True)))
            now = self._clock()
            connection.execute(
                update(promotions)
                .where(promotions.c.id == promotion_id)
                .values(
                    state=APPROVED if approve else REJECTED,
                    decided_by=decided_by,
                    decided_at=now,
                    decision_comment=comment,
                )
            )
            if approve:
                point_alias(connection, found.model, found.alias, found.version)
            decided = _promotion(_row(connection, promotion_id))
            for entry in audit(decided):
                append(connection, entry, now)
            return decided


def check_pending(promotion: Promotion) -> Promotion:
    """``promotion`` if it is pending, else Conflict: it was decided already."""
    if promotion.state != PENDING:
        raise Conflict(
            f"promotion {promotion.id} was {promotion.state} already, by {promotion.decided_by}: "
            f"request it again (dockyard promote {promotion.model} {promotion.version} "
            f"--to {promotion.alias})"
        )
    return promotion


def _row(connection: Connection, promotion_id: int, *, lock: bool = False) -> Row[Any]:
    row = None
    if 0 < promotion_id <= MAX_ID:
        statement = select(promotions).where(promotions.c.id == promotion_id)
        row = connection.execute(statement.with_for_update() if lock else statement).first()
    if row is None:
        raise NotFound(
            f"no promotion {promotion_id}: list them with dockyard approvals list "
            "(GET /api/promotions)"
        )
    return row


def _promotion(row: Row[Any]) -> Promotion:
    return Promotion(
        id=row.id,
        model=row.model,
        version=row.version,
        alias=row.alias,
        state=row.state,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        comment=row.comment,
        gates=list(row.gates),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_comment=row.decision_comment,
    )


def _check_state(state: str) -> str:
    if state not in STATES:
        raise InvalidInput(f"unknown promotion state {state!r}; use one of {', '.join(STATES)}")
    return state


def _check_comment(comment: str) -> None:
    if len(comment) > COMMENT_LENGTH:
        raise InvalidInput(
            f"the comment is {len(comment)} characters long; the limit is {COMMENT_LENGTH}"
        )
