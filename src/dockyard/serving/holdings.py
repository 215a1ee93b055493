"""Which versions a server must hold, per model: the one answer start-up and following share.

Each reference resolves to a version (``fraud@production`` follows its alias, ``fraud:3`` never
moves); a model under an active rollout also holds the rollout's candidate. Start-up loads what
this names; a following server compares it with what it holds and swaps the difference in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dockyard.errors import InvalidInput
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import DEFAULT_ALIAS, ModelRef
from dockyard.registry.rollouts import active_rollouts
from dockyard.services.workspace import Workspace


@dataclass(frozen=True)
class Holdings:
    """The versions to hold, as (the reference that named it, the version), in the order the
    references were given: a model's first version is the one a request without a version gets.
    ``unresolved`` are the references that name nothing now (an unknown alias or version)."""

    versions: list[tuple[ModelRef, ModelVersion]] = field(default_factory=list)
    unresolved: list[tuple[ModelRef, Exception]] = field(default_factory=list)
    refs: list[ModelRef] = field(default_factory=list)
    """Every reference, in order (a failure is reported in the order it was given)."""

    def keys(self) -> set[tuple[str, int]]:
        """``(model, version)`` of every version held: what a change is detected on."""
        return {(version.model, version.version) for _, version in self.versions}


def default_refs(workspace: Workspace) -> list[ModelRef]:
    """Every model's ``production`` alias: what ``dockyard serve`` serves when given no models."""
    refs = [
        ModelRef(model.name, alias=DEFAULT_ALIAS)
        for model in workspace.store.list_models()
        if DEFAULT_ALIAS in model.aliases
    ]
    if not refs:
        raise InvalidInput(
            f"no model has a {DEFAULT_ALIAS!r} alias; name the models to serve "
            f"(dockyard serve fraud:1) or set one (dockyard models alias fraud {DEFAULT_ALIAS} 1)"
        )
    return refs


def held_versions(workspace: Workspace, refs: Sequence[ModelRef] | None) -> Holdings:
    """What the registry says the server must hold now, for ``refs`` (None: every model's
    ``production`` alias, read again each time, so a model that gains one is served too) and the
    active rollouts of the models they name (each candidate beside its stable version)."""
    holdings = Holdings()
    seen: set[tuple[str, int]] = set()
    for ref in default_refs(workspace) if refs is None else refs:
        holdings.refs.append(ref)
        try:
            version = workspace.store.resolve(ref)
        except Exception as exc:
            holdings.unresolved.append((ref, exc))
            continue
        if (version.model, version.version) not in seen:
            seen.add((version.model, version.version))
            holdings.versions.append((ref, version))
    models = {version.model for _, version in holdings.versions}
    for rollout in active_rollouts(workspace.store.engine):
        key = (rollout.model, rollout.candidate)
        if rollout.model not in models or key in seen:
            continue
        seen.add(key)
        ref = ModelRef(rollout.model, version=rollout.candidate)
        holdings.refs.append(ref)
        try:
            holdings.versions.append((ref, workspace.store.get_version(*key)))
        except Exception as exc:
            holdings.unresolved.append((ref, exc))
    return holdings
