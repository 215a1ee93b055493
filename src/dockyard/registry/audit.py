"""The audit trail: an append-only, hash-chained record of every state change.

Each change appends its ``AuditEntry`` with ``append`` on the connection of the change's own
transaction, so the two commit or roll back together. Entry ``n`` stores ``hash = SHA-256(prev_hash
+ canonical JSON of the entry)`` where ``prev_hash`` is entry ``n - 1``'s hash (``GENESIS`` for the
first): an entry edited, deleted, inserted or moved breaks the chain at that entry. The chain's head
(``audit_head``: last number and hash) is updated first by every append, which makes concurrent
writers queue on it: one chain, never forked, on SQLite and PostgreSQL. Reading, exporting and
checking the chain (``registry.audit_chain``) go through it in chunks, in one snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from dockyard.errors import DockyardError, InvalidInput
from dockyard.registry.db import database_errors
from dockyard.registry.tables import SHORT_TEXT_LENGTH, audit_head, audit_log

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""
HEAD_ID = 1
CHUNK = 1000
"""Entries read at a time when the whole trail is walked (export, verification)."""


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

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON (what ``audit export`` writes, one per line, and the API answers):
        enough to recompute every hash offline."""
        return {
            "seq": self.seq,
            "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "model": self.model,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


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
    and return it as stored. Takes the chain's head lock until that transaction ends: call it
    after the change's own writes and locks (another order can deadlock on PostgreSQL against a
    writer holding those rows and waiting for the head)."""
    return append_many(connection, [entry], at)[0]


def append_many(
    connection: Connection, entries: Sequence[AuditEntry], at: datetime | None = None
) -> list[AuditRecord]:
    """Append ``entries`` in order, as ``append`` does one, with one head update and one insert
    (a batch of security events). TypeError when a ``details`` is not JSON."""
    if not entries:
        return []
    at = (at or datetime.now(UTC)).astimezone(UTC)
    # The update comes first: it takes the head's lock before anything is read from it.
    locked = connection.execute(
        update(audit_head)
        .where(audit_head.c.id == HEAD_ID)
        .values(seq=audit_head.c.seq + len(entries))
    )
    if locked.rowcount != 1:
        raise DockyardError("the audit trail's head row is missing: the registry was tampered with")
    last, previous = connection.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID)
    ).one()
    records = []
    for seq, entry in enumerate(entries, last - len(entries) + 1):
        record = _sealed(seq, at, entry, previous)
        records.append(record)
        previous = record.hash
    connection.execute(
        insert(audit_log),
        [{**record.to_dict(), "at": record.at} for record in records],
    )
    connection.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(hash=previous))
    return records


def lock_head(connection: Connection) -> None:
    """Take the chain's head lock in ``connection``'s write transaction before reading the trail,
    for a check-then-append that must not race another (the write lock on SQLite already)."""
    connection.execute(
        select(audit_head.c.seq).where(audit_head.c.id == HEAD_ID).with_for_update()
    ).one_or_none()


def last_entry(connection: Connection, action: str) -> AuditRecord | None:
    """The newest entry of ``action``, if any."""
    row = connection.execute(
        select(audit_log)
        .where(audit_log.c.action == action)
        .order_by(audit_log.c.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else _from_row(row)


def read_entries(
    engine: Engine,
    *,
    model: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """The entries of ``model``, by ``actor``, at or after ``since`` (each filter when given),
    oldest first; with ``limit``, only the newest ``limit`` of them."""
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    statement = select(audit_log)
    if model is not None:
        statement = statement.where(audit_log.c.model == model)
    if actor is not None:
        statement = statement.where(audit_log.c.actor == actor)
    if since is not None:
        statement = statement.where(audit_log.c.at >= since)
    if limit is None:
        statement = statement.order_by(audit_log.c.seq)
    else:
        statement = statement.order_by(audit_log.c.seq.desc()).limit(limit)
    with database_errors(engine), engine.connect() as connection:
        records = [_from_row(row) for row in connection.execute(statement)]
    return records if limit is None else records[::-1]


def count_entries(engine: Engine) -> int:
    with database_errors(engine), engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_log)).scalar_one())


def export_jsonl(engine: Engine, out: BinaryIO) -> int:
    """Write every entry, oldest first, as one JSON object a line (``AuditRecord.to_dict``) to
    ``out``; how many. Reads ``CHUNK`` entries at a time from one snapshot of the trail."""
    written = 0
    with snapshot(engine) as connection:
        for chunk in chunks(connection):
            out.write(b"".join(orjson.dumps(record.to_dict()) + b"\n" for record in chunk))
            written += len(chunk)
    return written


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees the trail as it was at its first read, however many entries
    are appended meanwhile (PostgreSQL: repeatable read; SQLite's transactions always do)."""
    with database_errors(engine), engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def chunks(connection: Connection) -> Iterator[list[AuditRecord]]:
    """Every entry in order of ``seq``, ``CHUNK`` at a time (bounded memory on any size)."""
    after: int | None = None
    while True:
        statement = select(audit_log).order_by(audit_log.c.seq).limit(CHUNK)
        if after is not None:
            statement = statement.where(audit_log.c.seq > after)
        chunk = [_from_row(row) for row in connection.execute(statement)]
        if not chunk:
            return
        yield chunk
        after = chunk[-1].seq


def read_head(connection: Connection) -> tuple[int, str] | None:
    """The head's last number and hash (None when its row is gone)."""
    row = connection.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID)
    ).one_or_none()
    return None if row is None else (int(row.seq), str(row.hash))


def _sealed(seq: int, at: datetime, entry: AuditEntry, prev_hash: str) -> AuditRecord:
    """``entry`` as it will be stored (and read back) as entry ``seq``, with its hash."""
    actor = entry.actor[:SHORT_TEXT_LENGTH]
    target = entry.target[:SHORT_TEXT_LENGTH]
    details = orjson.loads(orjson.dumps(dict(entry.details)))  # as it will read back: plain JSON
    digest = entry_hash(prev_hash, seq, at, actor, entry.action, target, entry.model, details)
    return AuditRecord(
        seq, at, actor, entry.action, target, entry.model, details, prev_hash, digest
    )


def _from_row(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        model=row.model,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
