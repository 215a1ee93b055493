"""The state-changing use cases on registered models besides registration: move and remove
aliases, archive and unarchive a version, change a model's description and tags.

Each takes the principal acting and checks the permission table first, so the CLI (the local user),
the HTTP API (a key or token) and the Python API go through the same door; each change is audited
in its own transaction. A protected alias (``[governance] protected_aliases``) is never moved or
removed here: it moves only through an approved promotion (``services.promotions``).
"""

from __future__ import annotations

from collections.abc import Mapping

from dockyard.errors import Forbidden
from dockyard.governance.policy import Policy
from dockyard.registry.audit import AuditEntry
from dockyard.registry.records import Model, ModelVersion
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.workspace import Workspace


def set_alias(
    workspace: Workspace, actor: Principal, name: str, alias: str, version: int
) -> ModelVersion:
    """Point ``alias`` at ``name:version``; Forbidden for a protected alias, saying how to
    request the move."""
    require(actor, SERVICES["set_alias"], name)
    refuse_protected(workspace, name, alias, version)
    entry = AuditEntry(
        actor.actor, "alias.move", f"{name}@{alias}", name, {"alias": alias, "version": version}
    )
    return workspace.store.set_alias(name, alias, version, audit=entry)


def refuse_protected(
    workspace: Workspace, name: str, alias: str, version: int | None = None
) -> None:
    """Forbidden when ``alias`` is protected, saying how to request the move. Registration calls
    it before storing anything (``version`` None: the number is not known yet)."""
    if not Policy.of(workspace.settings).is_protected(alias):
        return
    first = "" if version is not None else "register it without the alias, then "
    number = version if version is not None else "VERSION"
    raise Forbidden(
        f"alias {alias!r} is protected: {first}request the move with `dockyard promote {name} "
        f"{number} --to {alias}` (POST /api/models/{name}/promotions) and have an approver "
        "approve it"
    )


def delete_alias(workspace: Workspace, actor: Principal, name: str, alias: str) -> None:
    """Remove ``alias``; Forbidden for a protected alias (it only moves, through promotions)."""
    require(actor, SERVICES["delete_alias"], name)
    if Policy.of(workspace.settings).is_protected(alias):
        raise Forbidden(
            f"alias {alias!r} is protected: it moves only through an approved promotion "
            f"(`dockyard promote {name} VERSION --to {alias}`) and is never removed directly; "
            "to remove it, first take it out of protected_aliases in [governance] of dockyard.toml"
        )
    entry = AuditEntry(actor.actor, "alias.delete", f"{name}@{alias}", name, {"alias": alias})
    workspace.store.delete_alias(name, alias, audit=entry)


def archive(workspace: Workspace, actor: Principal, name: str, version: int) -> ModelVersion:
    require(actor, SERVICES["archive"], name)
    entry = AuditEntry(actor.actor, "version.archive", f"{name}:{version}", name)
    return workspace.store.archive(name, version, audit=entry)


def unarchive(workspace: Workspace, actor: Principal, name: str, version: int) -> ModelVersion:
    """Make an archived version live again (the same permission as archiving it); a version that
    is not archived is returned unchanged."""
    require(actor, SERVICES["unarchive"], name)
    entry = AuditEntry(actor.actor, "version.unarchive", f"{name}:{version}", name)
    return workspace.store.unarchive(name, version, audit=entry)


def update_model(
    workspace: Workspace,
    actor: Principal,
    name: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Model:
    """Change the description and/or replace the tags of a model (versions stay immutable); each
    change audited as ``model.update`` with what it set."""
    require(actor, SERVICES["update_model"], name)
    if description is not None:
        entry = AuditEntry(actor.actor, "model.update", name, name, {"description": description})
        workspace.store.set_model_description(name, description, audit=entry)
    if tags is not None:
        entry = AuditEntry(actor.actor, "model.update", name, name, {"tags": dict(tags)})
        workspace.store.set_model_tags(name, tags, audit=entry)
    return workspace.store.get_model(name)
