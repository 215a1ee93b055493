"""Checking the audit trail's hash chain: every entry recomputed, every link and number followed,
and the head compared with the last entry, so an edited, deleted, inserted or moved entry is
found and named by its number (``dockyard audit verify``, ``GET /api/audit/verify``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from dockyard.registry.audit import GENESIS, AuditRecord, chunks, entry_hash, read_head, snapshot

EDITED = "edited"
DELETED = "deleted"
INSERTED = "inserted"
REORDERED = "reordered"


@dataclass(frozen=True)
class AuditProblem:
    """One break in the chain: the entry's number, how it was tampered with (``edited``,
    ``deleted``, ``inserted``, ``reordered``) and a sentence saying what was found."""

    seq: int
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


def verify(engine: Engine) -> list[AuditProblem]:
    """Every break in the audit trail, in order of entry number; empty when the chain is intact.

    Reads one snapshot of the trail ``CHUNK`` entries at a time: appends made meanwhile are
    neither checked nor reported."""
    walk = _Walk()
    with snapshot(engine) as connection:
        for chunk in chunks(connection):
            walk.check(chunk)
        head = read_head(connection)
    walk.check_head(head)
    return sorted(walk.problems, key=lambda problem: problem.seq)


@dataclass
class _Walk:
    """The chain followed so far: the last entry's number and hash, and the hashes of the
    entries of the previous and current chunk (to say which entry a broken link points at: a
    later one, or an earlier one past entries already found moved, means reordered; an earlier
    one past entries in their place means those were inserted)."""

    last_seq: int = 0
    last_hash: str = GENESIS
    nearby: dict[str, int] = field(default_factory=dict)
    moved: set[int] = field(default_factory=set)
    """Entries found out of their place in the chain (reordered, not inserted)."""
    problems: list[AuditProblem] = field(default_factory=list)

    def check(self, chunk: list[AuditRecord]) -> None:
        ahead = {record.hash: record.seq for record in chunk}
        known = {**self.nearby, **ahead}
        for record in chunk:
            if record.seq < 1:
                self._add(
                    record.seq,
                    INSERTED,
                    f"entry {record.seq} cannot be part of the chain: entries count from 1",
                )
                continue
            self._entry(record, known)
            self.last_seq, self.last_hash = record.seq, record.hash
        self.nearby = ahead

    def check_head(self, head: tuple[int, str] | None) -> None:
        if head is None:
            self._add(self.last_seq, DELETED, "the audit trail's head row is missing")
            return
        seq, digest = head
        if seq > self.last_seq:
            self._add(
                self.last_seq + 1,
                DELETED,
                f"{_entries(self.last_seq + 1, seq)} missing from the end: the head records "
                f"{seq} entries, the last one left is {self.last_seq}",
            )
        elif seq < self.last_seq:
            self._add(
                seq + 1,
                INSERTED,
                f"{_entries(seq + 1, self.last_seq)} beyond the head, which records {seq} "
                "entries: added without their change",
            )
        elif digest != self.last_hash:
            self._add(
                seq,
                EDITED,
                f"entry {seq}'s hash is not the one the head records: it was replaced",
            )

    def _entry(self, record: AuditRecord, known: dict[str, int]) -> None:
        expected = self.last_seq + 1
        gap = record.seq > expected
        if gap:
            self._add(
                expected,
                DELETED,
                f"{_entries(expected, record.seq - 1)} missing: the entry before entry "
                f"{record.seq} is {self.last_seq or 'none'}",
            )
        recomputed = entry_hash(
            record.prev_hash,
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.target,
            record.model,
            record.details,
        )
        intact = recomputed == record.hash
        if not intact:
            self._add(
                record.seq,
                EDITED,
                f"entry {record.seq} ({record.action} {record.target}) does not match its "
                "hash: its content or number was changed after it was written",
            )
        if not gap and record.prev_hash != self.last_hash:
            self._link(record, known, intact)

    def _link(self, record: AuditRecord, known: dict[str, int], intact: bool) -> None:
        """``record`` does not follow the entry before it: say which entry it follows (nothing
        when that one was moved and ``record`` is ``intact``: it is in its place)."""
        previous = record.seq - 1
        follows = 0 if record.prev_hash == GENESIS else known.get(record.prev_hash)
        if follows in self.moved and intact:
            return
        if follows is None:
            self._add(
                record.seq,
                INSERTED,
                f"entry {record.seq} follows no entry of the trail (its prev_hash is not entry "
                f"{previous}'s hash): it was inserted, or entry {previous}'s hash rewritten",
            )
        elif follows >= record.seq:
            self.moved.add(record.seq)
            self._add(
                record.seq,
                REORDERED,
                f"entry {record.seq} follows entry {follows} in the chain, which comes after it: "
                "the entries were reordered",
            )
        elif self.moved.intersection(range(follows + 1, record.seq)):
            self.moved.add(record.seq)
            self._add(
                record.seq,
                REORDERED,
                f"entry {record.seq} follows entry {follows} in the chain, not entry {previous}: "
                "the entries were reordered",
            )
        else:
            self._add(
                follows + 1,
                INSERTED,
                f"{_entries(follows + 1, previous)} not in the chain: entry {record.seq} follows "
                f"entry {follows or 'none (the start)'}, so the entries between were inserted "
                "or moved there",
            )

    def _add(self, seq: int, kind: str, message: str) -> None:
        self.problems.append(AuditProblem(seq, kind, message))


def _entries(first: int, last: int) -> str:
    return f"entry {first} is" if first == last else f"entries {first} to {last} are"
