"""The audit trail on SQLite and PostgreSQL: every entry chained to the one before, tampering done
with plain SQL found and named by ``verify``, a change and its entry committed together or not at
all (an append that fails, a process killed inside the transaction), and two processes appending
at once leaving one chain with every entry."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import delete, func, insert, select, update

from dockyard.registry.audit import (
    GENESIS,
    AuditEntry,
    entry_hash,
    export_jsonl,
    read_entries,
)
from dockyard.registry.audit_chain import DELETED, EDITED, INSERTED, REORDERED, verify
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import parse_ref
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import audit_head, audit_log

MakeVersion = Callable[..., ModelVersion]
ENTRIES = 8
"""The trail each tampering test starts from: two registrations, then alias moves."""
APPENDS = 200
CHILD_TIMEOUT_S = 120


def move(model: str, alias: str, actor: str = "alice") -> AuditEntry:
    return AuditEntry(actor, "alias.move", f"{model}@{alias}", model, {"alias": alias})


@pytest.fixture
def trail(store: RegistryStore, make_version: MakeVersion) -> RegistryStore:
    """``store`` with ``ENTRIES`` audited changes."""
    for _ in range(2):
        make_version(audit=AuditEntry("alice", "model.register", "", "fraud"))
    for number in range(ENTRIES - 2):
        store.set_alias("fraud", "production", 1 + number % 2, audit=move("fraud", "production"))
    return store


def found(store: RegistryStore) -> list[tuple[int, str]]:
    return [(problem.seq, problem.kind) for problem in verify(store.engine)]


def stored(store: RegistryStore) -> list[dict[str, object]]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    return [dict(row._mapping) for row in rows]


def test_entries_chain_from_genesis_and_read_back_as_written(trail: RegistryStore) -> None:
    entries = read_entries(trail.engine)

    assert [entry.seq for entry in entries] == list(range(1, ENTRIES + 1))
    assert entries[0].prev_hash == GENESIS
    assert [entry.prev_hash for entry in entries[1:]] == [entry.hash for entry in entries[:-1]]
    assert [entry.target for entry in entries[:2]] == ["fraud:1", "fraud:2"]  # filled in
    assert entries[2].details == {"alias": "production"}
    assert verify(trail.engine) == []


def test_filters_and_the_newest_limit(trail: RegistryStore) -> None:
    trail.set_alias("fraud", "staging", 1, audit=move("fraud", "staging", actor="key:ci"))
    later = read_entries(trail.engine)[-1].at

    assert [e.seq for e in read_entries(trail.engine, actor="key:ci")] == [ENTRIES + 1]
    assert [e.seq for e in read_entries(trail.engine, limit=3)] == [7, 8, 9]
    assert read_entries(trail.engine, model="churn") == []
    assert [e.seq for e in read_entries(trail.engine, since=later)] == [ENTRIES + 1]
    assert read_entries(trail.engine, since=later + timedelta(seconds=1)) == []


def test_export_writes_one_json_entry_a_line_in_chunks(
    trail: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dockyard.registry.audit.CHUNK", 3)
    out = io.BytesIO()

    assert export_jsonl(trail.engine, out) == ENTRIES
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, ENTRIES + 1))
    assert lines[2]["hash"] == entry_hash(
        lines[2]["prev_hash"],
        3,
        datetime.fromisoformat(lines[2]["at"]),
        *(lines[2][key] for key in ("actor", "action", "target", "model", "details")),
    )


def test_an_edited_entry_is_named(trail: RegistryStore) -> None:
    with trail.engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 4).values(details={"alias": "staging"})
        )

    assert found(trail) == [(4, EDITED)]


def test_an_edited_actor_is_named_even_across_chunks(
    trail: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dockyard.registry.audit.CHUNK", 2)
    with trail.engine.begin() as connection:
        connection.execute(update(audit_log).where(audit_log.c.seq == 7).values(actor="bob"))

    assert found(trail) == [(7, EDITED)]


def test_a_deleted_entry_is_named(trail: RegistryStore) -> None:
    with trail.engine.begin() as connection:
        connection.execute(delete(audit_log).where(audit_log.c.seq == 3))

    (problem,) = verify(trail.engine)
    assert (problem.seq, problem.kind) == (3, DELETED)
    assert "entry 3 is missing" in problem.message


def test_deleting_the_last_entries_shows_against_the_head(trail: RegistryStore) -> None:
    with trail.engine.begin() as connection:
        connection.execute(delete(audit_log).where(audit_log.c.seq >= ENTRIES - 1))

    (problem,) = verify(trail.engine)
    assert (problem.seq, problem.kind) == (ENTRIES - 1, DELETED)
    assert f"entries {ENTRIES - 1} to {ENTRIES} are missing from the end" in problem.message


def test_an_entry_forged_after_the_last_is_named(trail: RegistryStore) -> None:
    last = read_entries(trail.engine)[-1]
    forged = _forged(ENTRIES + 1, last.hash)
    with trail.engine.begin() as connection:
        connection.execute(insert(audit_log).values(**forged))

    assert found(trail) == [(ENTRIES + 1, INSERTED)]


def test_an_entry_forged_into_the_middle_is_named(trail: RegistryStore) -> None:
    """The forger renumbers the later entries, links a well-hashed entry to entry 2 and moves
    the head: the old entry 3 (now 4) still follows entry 2, and the renumbered ones no longer
    match their hashes."""
    entries = read_entries(trail.engine)
    with trail.engine.begin() as connection:
        # Two steps: PostgreSQL checks the primary key row by row.
        connection.execute(
            update(audit_log).where(audit_log.c.seq >= 3).values(seq=audit_log.c.seq + 1000)
        )
        connection.execute(
            update(audit_log).where(audit_log.c.seq >= 1000).values(seq=audit_log.c.seq - 999)
        )
        connection.execute(insert(audit_log).values(**_forged(3, entries[1].hash)))
        connection.execute(update(audit_head).values(seq=ENTRIES + 1, hash=entries[-1].hash))

    problems = found(trail)
    assert problems[0] == (3, INSERTED)
    assert problems[1:] == [(seq, EDITED) for seq in range(4, ENTRIES + 2)]


def test_two_swapped_entries_are_named(trail: RegistryStore) -> None:
    with trail.engine.begin() as connection:
        for old, new in ((4, -4), (5, 4), (-4, 5)):
            connection.execute(update(audit_log).where(audit_log.c.seq == old).values(seq=new))

    assert found(trail) == [(4, EDITED), (4, REORDERED), (5, EDITED), (5, REORDERED)]


def test_a_rewritten_last_hash_differs_from_the_head(trail: RegistryStore) -> None:
    entries = read_entries(trail.engine)
    last = entries[-1]
    rewritten = entry_hash(
        last.prev_hash, last.seq, last.at, "mallory", last.action, last.target, last.model, {}
    )
    with trail.engine.begin() as connection:
        connection.execute(
            update(audit_log)
            .where(audit_log.c.seq == last.seq)
            .values(actor="mallory", details={}, hash=rewritten)
        )

    assert found(trail) == [(ENTRIES, EDITED)]


def test_a_failing_append_leaves_neither_the_change_nor_its_entry(
    trail: RegistryStore, make_version: MakeVersion
) -> None:
    unserializable = AuditEntry("alice", "alias.move", "fraud@production", "fraud", {"x": object()})
    before = _production(trail)

    with pytest.raises(TypeError):
        trail.set_alias("fraud", "canary", 1, audit=unserializable)
    with pytest.raises(TypeError):
        make_version(audit=dataclasses.replace(unserializable, action="model.register"))

    assert "canary" not in trail.get_version("fraud", 1).aliases
    assert _production(trail) == before
    assert [v.version for v in trail.list_versions("fraud")] == [1, 2]
    assert len(stored(trail)) == ENTRIES
    assert verify(trail.engine) == []


KILLED_CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from dockyard.registry.audit import AuditEntry
    from dockyard.registry.db import open_engine
    from dockyard.registry.store import RegistryStore

    def stalled():
        # The store asks its clock for the entry's time after the change, inside the transaction.
        print("changed", flush=True)
        time.sleep(600)
        return datetime.now(UTC)

    store = RegistryStore(open_engine(sys.argv[1]), clock=stalled)
    entry = AuditEntry("mallory", "alias.move", "fraud@production", "fraud")
    store.set_alias("fraud", "production", 1, audit=entry)  # from 2 (the trail's last move)
    """
)


def test_a_process_killed_inside_the_change_leaves_neither(
    trail: RegistryStore, database_url: str
) -> None:
    assert _production(trail) == 2
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "changed", child.stderr
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    assert _production(trail) == 2
    assert [row["actor"] for row in stored(trail)] == ["alice"] * ENTRIES
    # The lock it held is gone: the next change and its entry go through.
    trail.set_alias("fraud", "production", 1, audit=move("fraud", "production"))
    assert _production(trail) == 1
    assert verify(trail.engine) == []


APPENDING_CHILD = textwrap.dedent(
    """
    import sys
    import time
    from dockyard.registry.audit import AuditEntry
    from dockyard.registry.db import open_engine
    from dockyard.registry.records import ArtifactRef, Lineage, Signature, TensorSpec
    from dockyard.registry.store import RegistryStore

    url, model, kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = RegistryStore(open_engine(url))
    signature = Signature(inputs=(TensorSpec("x", "FP64", (-1,)),), outputs=(), tabular=True)
    print("ready", flush=True)
    sys.stdin.readline()
    for number in range(count):
        if kind == "register":
            store.create_version(
                model=model,
                framework="sklearn",
                artifact=ArtifactRef("ab" * 32, "skops"),
                signature=signature,
                lineage=Lineage.from_dict({}),
                audit=AuditEntry(model, "model.register", "", model, {"n": number}),
            )
        else:
            entry = AuditEntry(model, "alias.move", model + "@a", model, {"n": number})
            store.set_alias(model, "a", 1 + number % 2, audit=entry)
        time.sleep(0.005)  # a breath between changes: SQLite's waiting writer gets its turn
    """
)


def test_two_processes_appending_at_once_leave_one_chain(
    store: RegistryStore, make_version: MakeVersion, database_url: str
) -> None:
    for _ in range(2):
        make_version("mover")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDING_CHILD, database_url, model, kind, str(APPENDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model, kind in (("mover", "move"), ("registrar", "register"))
    ]
    try:
        for child in children:  # both have imported everything: their appends overlap
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=CHILD_TIMEOUT_S) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()

    assert [child.returncode for child in children] == [0, 0], results
    entries = read_entries(store.engine)
    assert [entry.seq for entry in entries] == list(range(1, 2 * APPENDS + 1))
    for actor in ("mover", "registrar"):
        numbers = [entry.details["n"] for entry in entries if entry.actor == actor]
        assert numbers == list(range(APPENDS))
    actors = [entry.actor for entry in entries]
    switches = sum(before != after for before, after in zip(actors, actors[1:], strict=False))
    assert switches > 1  # they did append at the same time
    assert verify(store.engine) == []
    assert len(store.list_versions("registrar")) == APPENDS
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(audit_log)).scalar() == (
            2 * APPENDS
        )


def _production(store: RegistryStore) -> int:
    return store.resolve(parse_ref("fraud@production")).version


def _forged(seq: int, prev_hash: str) -> dict[str, object]:
    at = datetime.now(UTC)
    values = {
        "actor": "mallory",
        "action": "key.create",
        "target": "key:forged",
        "model": None,
        "details": {},
    }
    digest = entry_hash(prev_hash, seq, at, *values.values())  # type: ignore[arg-type]
    return {"seq": seq, "at": at, **values, "prev_hash": prev_hash, "hash": digest}
