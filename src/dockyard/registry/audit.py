"""The audit trail: an append-only, hash-chained record of every state change.

Each change appends its ``AuditEntry`` with ``append`` on the connection of the change's own
transaction, so the two commit or roll back together. Entry ``n`` stores ``hash = SHA-256(prev_hash
+ canonical JSON of the entry)`` where ``prev_hash`` is entry ``n - 1``'s hash (``GENESIS`` for the
first): an entry edited, deleted, inserted or moved breaks the chain at that entry. The chain's head
(``audit_head``: last number and hash) is updated first by every append, which makes concurrent
writers queue on it: one chain, never forked, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update

from dockyard.errors import DockyardError
from dockyard.registry.tables import SHORT_TEXT_LENGTH, audit_head, audit_log

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""
HEAD_ID = 1


@dataclass(frozen=True)
class AuditEntry:
    """One state change: who (``actor``, as ``Principal.actor`` writes it), what (``action``,
    dotted: ``alias.move``, ``key.revoke``), on what (``target``: ``fraud:4``, ``key:ab12``), the
    model it concerns (for ``audit log --model``) and JSON ``details`` (never a secret, never a
    personal value)."""

    actor: str
    action: str
    target: str
    model: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """An entry as stored: its number, time and hashes."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    model: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


def entry_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    model: str | None,
    details: Mapping[str, Any],
) -> str:
    """SHA-256 (hex) of the previous hash and the entry's canonical JSON (sorted keys, UTC
    microsecond time): what ``append`` stores and ``verify`` recomputes."""
    body = orjson.dumps(
        {
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "model": model,
            "details": details,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def append(connection: Connection, entry: AuditEntry, at: datetime | None = None) -> AuditRecord:
    """Append ``entry`` in ``connection``'s transaction (which must write: ``write_transaction``)
    and return it as stored. Takes the chain's head lock until that transaction ends."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    actor = entry.actor[:SHORT_TEXT_LENGTH]
    target = entry.target[:SHORT_TEXT_LENGTH]
    details = orjson.loads(orjson.dumps(entry.details))  # as it will read back: plain JSON
    # The update comes first: it takes the head's lock before anything is read from it.
    locked = connection.execute(
        update(audit_head).where(audit_head.c.id == HEAD_ID).values(seq=audit_head.c.seq + 1)
    )
    if locked.rowcount != 1:
        raise DockyardError("the audit trail's head row is missing: the registry was tampered with")
    seq, previous = connection.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID)
    ).one()
    digest = entry_hash(previous, seq, at, actor, entry.action, target, entry.model, details)
    connection.execute(
        insert(audit_log).values(
            seq=seq,
            at=at,
            actor=actor,
            action=entry.action,
            target=target,
            model=entry.model,
            details=details,
            prev_hash=previous,
            hash=digest,
        )
    )
    connection.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(hash=digest))
    return AuditRecord(seq, at, actor, entry.action, target, entry.model, details, previous, digest)
