"""PromotionStore on SQLite and PostgreSQL: one pending request per model and alias (even when
requests race), the approval and the alias move in one transaction with both audit entries, and
nothing at all when the move fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from dockyard.errors import Conflict, InvalidInput, NotFound
from dockyard.registry.audit import AuditEntry
from dockyard.registry.promotions import APPROVED, PENDING, REJECTED, Promotion, PromotionStore
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import ModelRef
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import audit_log

MakeVersion = Callable[..., ModelVersion]
GATES = [{"name": "card", "passed": True, "detail": "has intended_use"}]
THREADS = 6


def _requested(promotion: Promotion) -> AuditEntry:
    return AuditEntry("alice", "promotion.request", promotion.target, promotion.model)


def _decided(action: str) -> Callable[[Promotion], list[AuditEntry]]:
    def entries(promotion: Promotion) -> list[AuditEntry]:
        found = [AuditEntry("carol", action, promotion.target, promotion.model)]
        if action == "promotion.approve":
            target = f"{promotion.model}@{promotion.alias}"
            found.append(AuditEntry("carol", "alias.move", target, promotion.model))
        return found

    return entries


def _actions(store: RegistryStore) -> list[tuple[str, str, str]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.target).order_by(
                audit_log.c.seq
            )
        ).all()
    return [tuple(row) for row in rows]


def test_a_request_is_stored_pending_and_audited(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    promotions = PromotionStore(store.engine)
    version = make_version()

    created = promotions.create(version, "production", "alice", "ready", GATES, _requested)

    assert created.state == PENDING
    assert (created.model, created.version, created.alias) == ("fraud", 1, "production")
    assert created.gates == GATES
    assert promotions.get(created.id) == created
    assert promotions.all(model="fraud", state=PENDING) == [created]
    assert promotions.all(model="churn") == []
    assert _actions(store) == [("alice", "promotion.request", f"promotion:{created.id}")]


def test_one_pending_request_per_model_and_alias(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    promotions = PromotionStore(store.engine)
    first, second = make_version(), make_version()
    promotions.create(first, "production", "alice", "", GATES, _requested)

    with pytest.raises(Conflict, match="pending already"):
        promotions.create(second, "production", "bob", "", GATES, _requested)
    other_alias = promotions.create(second, "canary", "bob", "", GATES, _requested)

    assert other_alias.state == PENDING
    assert len(promotions.all(state=PENDING)) == 2


def test_racing_requests_leave_one_pending(store: RegistryStore, make_version: MakeVersion) -> None:
    promotions = PromotionStore(store.engine)
    version = make_version()
    barrier = threading.Barrier(THREADS, timeout=30)

    def request(index: int) -> bool:
        barrier.wait()
        try:
            promotions.create(version, "production", f"user{index}", "", GATES, _requested)
        except Conflict:
            return False
        return True

    with ThreadPoolExecutor(THREADS) as pool:
        created = list(pool.map(request, range(THREADS)))

    assert created.count(True) == 1
    assert len(promotions.all(state=PENDING)) == 1
    assert [action for _, action, _ in _actions(store)] == ["promotion.request"]


def test_approval_moves_the_alias_with_both_entries(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    promotions = PromotionStore(store.engine)
    make_version()
    candidate = make_version()
    store.set_alias("fraud", "production", 1)
    created = promotions.create(candidate, "production", "alice", "", GATES, _requested)

    decided = promotions.decide(
        created.id,
        approve=True,
        decided_by="carol",
        comment="looks right",
        audit=_decided("promotion.approve"),
    )

    assert decided.state == APPROVED
    assert (decided.decided_by, decided.decision_comment) == ("carol", "looks right")
    assert decided.decided_at is not None
    assert store.resolve(ModelRef("fraud", alias="production")).version == 2
    assert _actions(store)[-2:] == [
        ("carol", "promotion.approve", f"promotion:{created.id}"),
        ("carol", "alias.move", "fraud@production"),
    ]
    with pytest.raises(Conflict, match="approved already, by carol"):
        promotions.decide(
            created.id, approve=False, decided_by="dave", comment="no", audit=_decided("x")
        )


def test_a_failed_move_leaves_the_request_pending_and_unaudited(
    store: RegistryStore, make_version: MakeVersion
) -> None:
    promotions = PromotionStore(store.engine)
    candidate = make_version()
    created = promotions.create(candidate, "production", "alice", "", GATES, _requested)
    store.archive("fraud", 1)
    before = _actions(store)

    with pytest.raises(Conflict, match="archived"):
        promotions.decide(
            created.id,
            approve=True,
            decided_by="carol",
            comment="",
            audit=_decided("promotion.approve"),
        )

    assert promotions.get(created.id).state == PENDING
    assert _actions(store) == before
    with pytest.raises(NotFound):
        store.resolve(ModelRef("fraud", alias="production"))


def test_rejection_leaves_the_alias(store: RegistryStore, make_version: MakeVersion) -> None:
    promotions = PromotionStore(store.engine)
    created = promotions.create(make_version(), "production", "alice", "", GATES, _requested)

    decided = promotions.decide(
        created.id,
        approve=False,
        decided_by="carol",
        comment="card is thin",
        audit=_decided("promotion.reject"),
    )

    assert decided.state == REJECTED
    assert store.get_model("fraud").aliases == {}
    assert _actions(store)[-1] == ("carol", "promotion.reject", f"promotion:{created.id}")


@pytest.mark.parametrize("promotion_id", [0, 99, 2**40], ids=["zero", "unknown", "huge"])
def test_an_unknown_request_is_not_found(store: RegistryStore, promotion_id: int) -> None:
    with pytest.raises(NotFound, match="dockyard approvals list"):
        PromotionStore(store.engine).get(promotion_id)


def test_an_unknown_state_is_refused(store: RegistryStore) -> None:
    with pytest.raises(InvalidInput, match="pending, approved, rejected"):
        PromotionStore(store.engine).all(state="done")
