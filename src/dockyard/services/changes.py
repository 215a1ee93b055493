"""The state-changing use cases on registered models besides registration: move and remove
aliases, archive and unarchive a version, change a model's description and tags.

Each takes the principal acting and checks the permission table first, so the CLI (the local user),
the HTTP API (a key or token) and the Python API go through the same door.
"""

from __future__ import annotations

from collections.abc import Mapping

from dockyard.registry.records import Model, ModelVersion
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.workspace import Workspace


def set_alias(
    workspace: Workspace, actor: Principal, name: str, alias: str, version: int
) -> ModelVersion:
    require(actor, SERVICES["set_alias"], name)
    return workspace.store.set_alias(name, alias, version)


def delete_alias(workspace: Workspace, actor: Principal, name: str, alias: str) -> None:
    require(actor, SERVICES["delete_alias"], name)
    workspace.store.delete_alias(name, alias)


def archive(workspace: Workspace, actor: Principal, name: str, version: int) -> ModelVersion:
    require(actor, SERVICES["archive"], name)
    return workspace.store.archive(name, version)


def unarchive(workspace: Workspace, actor: Principal, name: str, version: int) -> ModelVersion:
    """Make an archived version live again (the same permission as archiving it); a version that
    is not archived is returned unchanged."""
    require(actor, SERVICES["unarchive"], name)
    return workspace.store.unarchive(name, version)


def update_model(
    workspace: Workspace,
    actor: Principal,
    name: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Model:
    """Change the description and/or replace the tags of a model (versions stay immutable)."""
    require(actor, SERVICES["update_model"], name)
    if description is not None:
        workspace.store.set_model_description(name, description)
    if tags is not None:
        workspace.store.set_model_tags(name, tags)
    return workspace.store.get_model(name)
