"""Alias moves, archiving and model updates: each audited with its actor in its own transaction,
and a protected alias refused with the way to request its move."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from dockyard.config import load_settings
from dockyard.errors import Forbidden, NotFound
from dockyard.registry.tables import audit_log
from dockyard.security.principals import Principal, Role
from dockyard.services import changes
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

BOB = Principal("bob", Role.DEPLOYER)
ACTIONS = ("alias.move", "alias.delete", "version.archive", "version.unarchive", "model.update")


def _open(home: Path, **governance: Any) -> Workspace:
    settings = load_settings({"home": home}, env={})
    return Workspace.open(dataclasses.replace(settings, governance=governance))


@pytest.fixture
def lr(home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]) -> Path:
    """A home with ``lr`` versions 1 and 2."""
    workspace = _open(home)
    for _ in range(2):
        register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:50]))
    workspace.store.close()
    return home


def _trail(workspace: Workspace) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
    columns = (audit_log.c.actor, audit_log.c.action, audit_log.c.target, audit_log.c.model)
    with workspace.store.engine.connect() as connection:
        rows = connection.execute(
            select(*columns, audit_log.c.details)
            .where(audit_log.c.action.in_(ACTIONS))
            .order_by(audit_log.c.seq)
        ).all()
    return [tuple(row) for row in rows]


def test_a_protected_alias_is_refused_with_how_to_request_it(lr: Path) -> None:
    workspace = _open(lr)

    with pytest.raises(Forbidden) as moved:
        changes.set_alias(workspace, BOB, "lr", "production", 2)
    with pytest.raises(Forbidden) as deleted:
        changes.delete_alias(workspace, BOB, "lr", "production")

    assert str(moved.value) == (
        "alias 'production' is protected: request the move with `dockyard promote lr 2 --to "
        "production` (POST /api/models/lr/promotions) and have an approver approve it"
    )
    assert "first take it out of protected_aliases in [governance]" in str(deleted.value)
    assert workspace.store.get_model("lr").aliases == {}
    assert _trail(workspace) == []


def test_registering_into_a_protected_alias_stores_nothing(
    lr: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> None:
    workspace = _open(lr)
    request = Registration("lr", reference_data=tabular_data[0][:50], alias="production")

    with pytest.raises(Forbidden) as refused:
        register(workspace, logistic, request, BOB)

    assert str(refused.value).startswith(
        "alias 'production' is protected: register it without the alias, then request the move "
        "with `dockyard promote lr VERSION --to production`"
    )
    assert [v.version for v in workspace.store.list_versions("lr")] == [1, 2]


def test_an_unprotected_production_moves_directly(lr: Path) -> None:
    workspace = _open(lr, protected_aliases=["prod-eu"])

    assert changes.set_alias(workspace, BOB, "lr", "production", 2).aliases == ("production",)
    with pytest.raises(Forbidden, match="'prod-eu' is protected"):
        changes.set_alias(workspace, BOB, "lr", "prod-eu", 2)


def test_every_change_is_audited_with_its_actor(lr: Path) -> None:
    workspace = _open(lr)

    changes.set_alias(workspace, BOB, "lr", "staging", 2)
    changes.delete_alias(workspace, BOB, "lr", "staging")
    changes.archive(workspace, BOB, "lr", 1)
    changes.unarchive(workspace, BOB, "lr", 1)
    changes.update_model(workspace, BOB, "lr", "fraud scores", {"team": "risk"})

    assert _trail(workspace) == [
        ("key:bob", "alias.move", "lr@staging", "lr", {"alias": "staging", "version": 2}),
        ("key:bob", "alias.delete", "lr@staging", "lr", {"alias": "staging"}),
        ("key:bob", "version.archive", "lr:1", "lr", {}),
        ("key:bob", "version.unarchive", "lr:1", "lr", {}),
        ("key:bob", "model.update", "lr", "lr", {"description": "fraud scores"}),
        ("key:bob", "model.update", "lr", "lr", {"tags": {"team": "risk"}}),
    ]


def test_a_failed_change_leaves_no_entry(lr: Path) -> None:
    workspace = _open(lr)

    with pytest.raises(NotFound):
        changes.set_alias(workspace, BOB, "lr", "staging", 9)
    with pytest.raises(NotFound):
        changes.delete_alias(workspace, BOB, "lr", "canary")

    assert _trail(workspace) == []
