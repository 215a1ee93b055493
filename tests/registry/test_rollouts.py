"""RolloutStore on SQLite and PostgreSQL: one active rollout per model (even when starts race),
each step audited in its own transaction, an ended rollout never ended twice, and a promotion
that moves the alias with the state change."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from dockyard.errors import Conflict, NotFound
from dockyard.registry.audit import AuditEntry
from dockyard.registry.records import ModelVersion, Rollout
from dockyard.registry.refs import ModelRef
from dockyard.registry.rollouts import (
    ABORTED,
    ACTIVE,
    CANARY,
    PROMOTED,
    ROLLED_BACK,
    RolloutPlan,
    RolloutStore,
    active_rollouts,
)
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import audit_log

MakeVersion = Callable[..., ModelVersion]
THREADS = 6


def _plan(model: str = "fraud", candidate: int = 2) -> RolloutPlan:
    return RolloutPlan(model, "staging", 1, candidate, CANARY, 10, "user")


def _started(rollout: Rollout) -> AuditEntry:
    return AuditEntry("alice", "rollout.start", rollout.target, rollout.model)


def _ended(action: str) -> Callable[[Rollout], list[AuditEntry]]:
    def entries(rollout: Rollout) -> list[AuditEntry]:
        return [AuditEntry("bob", action, rollout.target, rollout.model, {"state": rollout.state})]

    return entries


def _actions(store: RegistryStore) -> list[tuple[str, str]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.action, audit_log.c.target).order_by(audit_log.c.seq)
        ).all()
    return [(row.action, row.target) for row in rows if row.action.startswith("rollout.")]


@pytest.fixture
def two_versions(make_version: MakeVersion, store: RegistryStore) -> None:
    make_version()
    make_version()
    store.set_alias("fraud", "staging", 1)


@pytest.mark.usefixtures("two_versions")
def test_a_started_rollout_is_active_and_audited(store: RegistryStore) -> None:
    started = RolloutStore(store.engine).start(_plan(), "alice", _started)

    assert started.state == ACTIVE
    assert (started.stable, started.candidate, started.sticky) == (1, 2, "user")
    assert active_rollouts(store.engine) == [started]
    assert RolloutStore(store.engine).current("fraud") == started
    assert _actions(store) == [("rollout.start", started.target)]


@pytest.mark.usefixtures("two_versions")
def test_one_active_rollout_per_model_even_when_starts_race(store: RegistryStore) -> None:
    rollouts = RolloutStore(store.engine)

    def start(_: int) -> Rollout | Exception:
        try:
            return rollouts.start(_plan(), "alice", _started)
        except Conflict as exc:
            return exc

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(start, range(THREADS)))

    started = [result for result in results if isinstance(result, Rollout)]
    assert len(started) == 1
    assert all("promote or abort it first" in str(r) for r in results if r not in started)
    assert len(active_rollouts(store.engine)) == 1
    assert len(_actions(store)) == 1


@pytest.mark.usefixtures("two_versions")
@pytest.mark.parametrize("state", [ABORTED, ROLLED_BACK], ids=["abort", "rollback"])
def test_an_ended_rollout_leaves_the_alias_and_cannot_end_again(
    store: RegistryStore, state: str
) -> None:
    rollouts = RolloutStore(store.engine)
    started = rollouts.start(_plan(), "alice", _started)

    ended = rollouts.end(started.id, state, "bob", "too many errors", _ended("rollout.end"))

    assert (ended.state, ended.ended_by, ended.reason) == (state, "bob", "too many errors")
    assert active_rollouts(store.engine) == []
    assert store.resolve(ModelRef("fraud", alias="staging")).version == 1
    with pytest.raises(Conflict, match=f"was {state} already, by bob"):
        rollouts.end(started.id, ABORTED, "carol", "again", _ended("rollout.end"))
    assert _actions(store) == [("rollout.start", started.target), ("rollout.end", started.target)]
    # The model can be rolled out again once the last one ended.
    assert rollouts.start(_plan(), "alice", _started).state == ACTIVE


@pytest.mark.usefixtures("two_versions")
def test_promoting_moves_the_alias_in_the_same_transaction(store: RegistryStore) -> None:
    rollouts = RolloutStore(store.engine)
    started = rollouts.start(_plan(), "alice", _started)

    ended = rollouts.end(
        started.id, PROMOTED, "bob", "promoted", _ended("rollout.promote"), move_alias=True
    )

    assert ended.state == PROMOTED
    assert store.resolve(ModelRef("fraud", alias="staging")).version == 2


@pytest.mark.usefixtures("two_versions")
def test_a_failed_alias_move_leaves_the_rollout_active_without_an_entry(
    store: RegistryStore,
) -> None:
    rollouts = RolloutStore(store.engine)
    started = rollouts.start(_plan(), "alice", _started)
    store.archive("fraud", 2)

    with pytest.raises(Conflict, match="archived"):
        rollouts.end(
            started.id, PROMOTED, "bob", "promoted", _ended("rollout.promote"), move_alias=True
        )

    assert rollouts.current("fraud").state == ACTIVE
    assert _actions(store) == [("rollout.start", started.target)]


def test_a_model_without_rollouts_says_how_to_start_one(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    make_version()

    with pytest.raises(NotFound, match="dockyard rollout start fraud"):
        RolloutStore(store.engine).current("fraud")
    with pytest.raises(NotFound, match="no rollout 7"):
        RolloutStore(store.engine).end(7, ABORTED, "bob", "", _ended("rollout.abort"))
