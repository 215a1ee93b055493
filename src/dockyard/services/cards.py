"""Model cards as use cases: read a version's card, set it (replacing it, or field by field), each
change audited with the fields it changed (never their text, which may be long or sensitive)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.governance.cards import changed_fields, check_card, merge_card
from dockyard.registry.audit import AuditEntry
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import parse_ref
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Action, Principal, require
from dockyard.services.workspace import Workspace


def read_card(workspace: Workspace, actor: Principal, ref: str) -> ModelVersion:
    """The version ``ref`` names (``fraud:4``, ``fraud@production``), whose ``card`` is its card
    (None until one is set) and ``lineage`` what the card is shown with."""
    parsed = parse_ref(ref)
    require(actor, Action.READ_MODEL, parsed.name)
    return workspace.store.resolve(parsed)


def set_card(
    workspace: Workspace,
    actor: Principal,
    name: str,
    version: int,
    card: Mapping[str, Any],
    *,
    merge: bool = False,
) -> ModelVersion:
    """Store ``card`` as the card of ``name:version`` (``merge``: only the fields it gives
    change, a blank one is removed); audited as ``card.set`` with the fields that changed.
    InvalidInput names a field that is unknown or malformed."""
    require(actor, SERVICES["set_card"], name)
    before = workspace.store.get_version(name, version).card
    after = merge_card(before, card) if merge else check_card(card)
    entry = AuditEntry(
        actor=actor.actor,
        action="card.set",
        target=f"{name}:{version}",
        model=name,
        details={"fields": changed_fields(before, after)},
    )
    return workspace.store.set_card(name, version, after, audit=entry)
