"""Four-eyes promotion as a use case, on a real home: gates block a request by name, one request
pending per alias, neither the registrant nor the requester may decide, the gates are checked
again at approval, and the approval moves the alias with its audit entries."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from dockyard.config import load_settings
from dockyard.errors import Conflict, Forbidden, InvalidInput
from dockyard.registry.refs import ModelRef
from dockyard.registry.tables import audit_log
from dockyard.security.principals import Principal, Role
from dockyard.services import promotions
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

POLICY = {"required_card_fields": [], "metric_gates": ["auc >= 0.8"]}
ALICE = Principal("alice", Role.ADMIN)
"""Registers the versions."""
BOB = Principal("bob", Role.DEPLOYER)
CAROL = Principal("carol", Role.APPROVER)
ERIN = Principal("erin", Role.ADMIN)


@pytest.fixture
def governed(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> Iterator[Workspace]:
    """A home under POLICY with ``lr`` 1 (AUC 0.9) and 2 (AUC 0.5), both registered by alice."""
    settings = dataclasses.replace(load_settings({"home": home}, env={}), governance=POLICY)
    workspace = Workspace.open(settings)
    for auc in (0.9, 0.5):
        request = Registration("lr", reference_data=tabular_data[0][:50], metrics={"auc": auc})
        register(workspace, logistic, request, ALICE)
    yield workspace
    workspace.store.close()


def _audit(workspace: Workspace) -> list[tuple[str, str, str, dict[str, Any]]]:
    with workspace.store.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.target, audit_log.c.details)
            .where(audit_log.c.action.like("promotion.%") | audit_log.c.action.like("alias.%"))
            .order_by(audit_log.c.seq)
        ).all()
    return [tuple(row) for row in rows]


def _production(workspace: Workspace) -> int:
    return workspace.store.resolve(ModelRef("lr", alias="production")).version


def test_a_failing_gate_blocks_the_request_by_name(governed: Workspace) -> None:
    with pytest.raises(Conflict) as refused:
        promotions.request_promotion(governed, BOB, "lr", 2, "production")

    assert str(refused.value).startswith("cannot promote lr:2 to @production: gate ")
    assert "gate 'metric auc >= 0.8' failed (auc is 0.5)" in str(refused.value)
    assert promotions.list_promotions(governed, BOB) == []
    assert _audit(governed) == []


def test_an_approval_by_a_second_approver_moves_the_alias(governed: Workspace) -> None:
    requested = promotions.request_promotion(governed, BOB, "lr", 1, "production", "ready")
    with pytest.raises(Conflict, match="pending already"):
        promotions.request_promotion(governed, ERIN, "lr", 1, "production")
    with pytest.raises(Forbidden, match="alice registered lr:1 and cannot decide"):
        promotions.approve(governed, ALICE, requested.id)
    with pytest.raises(Forbidden, match="may not approve"):
        promotions.approve(governed, BOB, requested.id)

    approved = promotions.approve(governed, CAROL, requested.id, "card and gates reviewed")

    assert approved.state == "approved"
    assert approved.decided_by == "key:carol"
    assert _production(governed) == 1
    trail = _audit(governed)
    assert [(actor, action, target) for actor, action, target, _ in trail] == [
        ("key:bob", "promotion.request", f"promotion:{requested.id}"),
        ("key:carol", "promotion.approve", f"promotion:{requested.id}"),
        ("key:carol", "alias.move", "lr@production"),
    ]
    gates = {gate["name"]: gate["passed"] for gate in trail[0][3]["gates"]}
    assert gates["metric auc >= 0.8"] is True
    assert trail[1][3]["comment"] == "card and gates reviewed"
    assert trail[2][3] == {
        "id": requested.id,
        "version": 1,
        "alias": "production",
        "previous": None,
    }
    with pytest.raises(Conflict, match="lr@production points at lr:1 already"):
        promotions.request_promotion(governed, BOB, "lr", 1, "production")
    with pytest.raises(Conflict, match="approved already, by key:carol"):
        promotions.reject(governed, Principal("dave", Role.APPROVER), requested.id, "late")


def test_the_requester_cannot_decide_and_a_rejection_says_why(governed: Workspace) -> None:
    requested = promotions.request_promotion(governed, ERIN, "lr", 1, "production")
    with pytest.raises(Forbidden, match="key:erin requested promotion .* cannot also decide"):
        promotions.approve(governed, ERIN, requested.id)
    with pytest.raises(InvalidInput, match="needs a comment"):
        promotions.reject(governed, CAROL, requested.id, " ")

    rejected = promotions.reject(governed, CAROL, requested.id, "no owner on the card")

    assert (rejected.state, rejected.decision_comment) == ("rejected", "no owner on the card")
    assert governed.store.get_model("lr").aliases == {}
    assert _audit(governed)[-1][:3] == ("key:carol", "promotion.reject", requested.target)
    again = promotions.request_promotion(governed, BOB, "lr", 1, "production")
    assert [p.state for p in promotions.list_promotions(governed, CAROL, "lr")] == [
        "pending",
        "rejected",
    ]
    assert promotions.list_promotions(governed, CAROL, state="pending") == [again]


def test_the_gates_are_checked_again_at_approval(governed: Workspace) -> None:
    requested = promotions.request_promotion(governed, BOB, "lr", 1, "production")
    blob = governed.artifacts.verified_path(governed.store.get_version("lr", 1).artifact.digest)
    blob.chmod(0o600)
    blob.write_bytes(b"swapped after the request")

    with pytest.raises(Conflict, match="cannot approve promotion .* gate 'artifact' failed"):
        promotions.approve(governed, CAROL, requested.id)

    assert promotions.list_promotions(governed, CAROL)[0].state == "pending"
    assert governed.store.get_model("lr").aliases == {}


def test_only_a_protected_alias_is_requested(governed: Workspace) -> None:
    with pytest.raises(InvalidInput, match="'staging' is not protected: move it directly"):
        promotions.request_promotion(governed, BOB, "lr", 1, "staging")


def test_a_scoped_principal_sees_only_its_models_requests(governed: Workspace) -> None:
    promotions.request_promotion(governed, BOB, "lr", 1, "production")
    scoped = Principal("eu-approver", Role.APPROVER, frozenset({"other"}))

    assert promotions.list_promotions(governed, scoped) == []
    assert len(promotions.list_promotions(governed, CAROL)) == 1


def test_the_check_names_the_alias_it_is_for(governed: Workspace) -> None:
    checked = promotions.check(governed, "lr:2")

    assert checked.alias == "production"
    assert [gate.name for gate in checked.failed] == ["metric auc >= 0.8"]
