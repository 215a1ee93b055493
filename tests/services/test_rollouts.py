"""Rollouts as a use case, on a real home: the state machine (start → promoted | aborted |
rolled_back), one active rollout per model, every step audited with its actor, the permission
table, and a protected alias promoted only through an approved four-eyes request."""

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
from dockyard.errors import Conflict, Forbidden, InvalidInput, NotFound
from dockyard.registry.refs import ModelRef
from dockyard.registry.rollouts import active_rollouts
from dockyard.registry.tables import audit_log
from dockyard.security.principals import Principal, Role
from dockyard.services import promotions, rollouts
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

ALICE = Principal("alice", Role.ADMIN)
"""Registers the versions."""
BOB = Principal("bob", Role.DEPLOYER)
CAROL = Principal("carol", Role.APPROVER)
PETE = Principal("pete", Role.PREDICTOR)
SCOPED = Principal("sam", Role.DEPLOYER, frozenset({"other"}))


@pytest.fixture
def workspace(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> Iterator[Workspace]:
    """A home with the default protected ``production`` (on ``lr`` 1), ``staging`` (on 1)
    unprotected, and versions 2 and 3 to roll out."""
    policy = {"required_card_fields": [], "metric_gates": []}
    settings = dataclasses.replace(load_settings({"home": home}, env={}), governance=policy)
    opened = Workspace.open(settings)
    for _ in range(3):
        register(opened, logistic, Registration("lr", reference_data=tabular_data[0][:20]), ALICE)
    opened.store.set_alias("lr", "production", 1)
    opened.store.set_alias("lr", "staging", 1)
    yield opened
    opened.store.close()


def _trail(workspace: Workspace) -> list[tuple[str, str, str]]:
    with workspace.store.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.target)
            .where(audit_log.c.seq > 0)
            .order_by(audit_log.c.seq)
        ).all()
    return [(r.actor, r.action, r.target) for r in rows if not r.action.startswith("version.")]


def _alias(workspace: Workspace, alias: str) -> int:
    return workspace.store.resolve(ModelRef("lr", alias=alias)).version


def test_a_canary_starts_beside_the_aliased_version_and_is_audited(workspace: Workspace) -> None:
    started = rollouts.start_rollout(workspace, BOB, "lr", 2, percent=10, sticky="user")

    assert (started.stable, started.candidate, started.mode) == (1, 2, "canary")
    assert (started.percent, started.sticky, started.alias) == (10, "user", "production")
    assert active_rollouts(workspace.store.engine) == [started]
    assert rollouts.rollout_status(workspace, "lr") == started
    assert _trail(workspace)[-1] == ("key:bob", "rollout.start", started.target)


def test_one_active_rollout_per_model(workspace: Workspace) -> None:
    rollouts.start_rollout(workspace, BOB, "lr", 2, percent=10)

    with pytest.raises(Conflict, match="active canary rollout of version 2 already"):
        rollouts.start_rollout(workspace, BOB, "lr", 3, mode="shadow")


@pytest.mark.parametrize(
    ("version", "options", "error", "message"),
    [
        (2, {"percent": 0}, InvalidInput, "1 to 99"),
        (2, {"percent": 100}, InvalidInput, "1 to 99"),
        (2, {}, InvalidInput, "needs the percent"),
        (2, {"mode": "shadow", "percent": 5}, InvalidInput, "give no percent"),
        (2, {"mode": "blue-green"}, InvalidInput, "unknown rollout mode"),
        (2, {"percent": 5, "sticky": ""}, InvalidInput, "sticky field"),
        (1, {"percent": 5}, Conflict, "points at lr:1 already"),
        (9, {"percent": 5}, NotFound, "no version 9"),
        (2, {"percent": 5, "alias": "canary"}, NotFound, "no alias 'canary'"),
    ],
    ids=[
        "zero",
        "hundred",
        "no-percent",
        "shadow-percent",
        "mode",
        "sticky",
        "same",
        "unknown",
        "alias",
    ],
)
def test_a_bad_start_is_refused_by_name(
    workspace: Workspace,
    version: int,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        rollouts.start_rollout(workspace, BOB, "lr", version, **options)

    assert active_rollouts(workspace.store.engine) == []


def test_an_archived_candidate_is_refused(workspace: Workspace) -> None:
    workspace.store.archive("lr", 3)

    with pytest.raises(Conflict, match="lr:3 is archived"):
        rollouts.start_rollout(workspace, BOB, "lr", 3, percent=5)


def test_the_permission_table_is_checked(workspace: Workspace) -> None:
    with pytest.raises(Forbidden, match="may not move alias"):
        rollouts.start_rollout(workspace, PETE, "lr", 2, percent=5)
    with pytest.raises(Forbidden, match="not allowed to use model 'lr'"):
        rollouts.start_rollout(workspace, SCOPED, "lr", 2, percent=5)
    rollouts.start_rollout(workspace, BOB, "lr", 2, percent=5)
    with pytest.raises(Forbidden):
        rollouts.abort_rollout(workspace, PETE, "lr")
    with pytest.raises(Forbidden):
        rollouts.promote_rollout(workspace, SCOPED, "lr")

    assert active_rollouts(workspace.store.engine)[0].candidate == 2


def test_an_abort_keeps_the_stable_version_and_ends_the_rollout(workspace: Workspace) -> None:
    started = rollouts.start_rollout(workspace, BOB, "lr", 2, mode="shadow", alias="staging")

    aborted = rollouts.abort_rollout(workspace, BOB, "lr", "wrong build")

    assert (aborted.state, aborted.ended_by, aborted.reason) == (
        "aborted",
        "key:bob",
        "wrong build",
    )
    assert _alias(workspace, "staging") == 1
    with pytest.raises(
        Conflict, match=f"rollout {started.id} of version 2, was aborted by key:bob"
    ):
        rollouts.abort_rollout(workspace, BOB, "lr")
    assert _trail(workspace)[-2:] == [
        ("key:bob", "rollout.start", started.target),
        ("key:bob", "rollout.abort", started.target),
    ]


def test_promoting_an_unprotected_alias_moves_it_with_both_entries(workspace: Workspace) -> None:
    started = rollouts.start_rollout(workspace, BOB, "lr", 2, percent=20, alias="staging")

    outcome = rollouts.promote_rollout(workspace, BOB, "lr")

    assert outcome.promotion is None
    assert outcome.rollout.state == "promoted"
    assert _alias(workspace, "staging") == 2
    assert _trail(workspace)[-2:] == [
        ("key:bob", "rollout.promote", started.target),
        ("key:bob", "alias.move", "lr@staging"),
    ]


def test_promoting_a_protected_alias_needs_the_four_eyes_approval(workspace: Workspace) -> None:
    started = rollouts.start_rollout(workspace, BOB, "lr", 2, percent=20)

    filed = rollouts.promote_rollout(workspace, BOB, "lr", "canary looks fine")

    assert filed.promotion is not None
    assert (filed.promotion.version, filed.promotion.alias) == (2, "production")
    assert filed.rollout.state == "active"
    assert _alias(workspace, "production") == 1
    with pytest.raises(Conflict, match=f"approvals approve {filed.promotion.id}"):
        rollouts.promote_rollout(workspace, BOB, "lr")
    with pytest.raises(Forbidden, match="may not approve"):
        promotions.approve(workspace, BOB, filed.promotion.id)

    promotions.approve(workspace, CAROL, filed.promotion.id)
    done = rollouts.promote_rollout(workspace, BOB, "lr")

    assert done.rollout.state == "promoted"
    assert _alias(workspace, "production") == 2
    assert [action for _, action, _ in _trail(workspace)[-5:]] == [
        "rollout.start",
        "promotion.request",
        "promotion.approve",
        "alias.move",
        "rollout.promote",
    ]
    assert _trail(workspace)[-1] == ("key:bob", "rollout.promote", started.target)


def test_a_rollback_is_the_systems_and_happens_once(workspace: Workspace) -> None:
    started = rollouts.start_rollout(workspace, BOB, "lr", 2, percent=30)

    first = rollouts.roll_back(workspace, started, "error rate 0.5 > 0.05")
    second = rollouts.roll_back(workspace, started, "error rate 0.5 > 0.05")

    assert first is not None
    assert (first.state, first.ended_by, first.reason) == (
        "rolled_back",
        "system:rollout",
        "error rate 0.5 > 0.05",
    )
    assert second is None
    assert _alias(workspace, "production") == 1
    assert _trail(workspace)[-1] == ("system:rollout", "rollout.rollback", started.target)
    assert [a for _, a, _ in _trail(workspace)].count("rollout.rollback") == 1
