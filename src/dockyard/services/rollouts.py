"""Rollouts of a candidate version beside the stable one: start (canary or shadow), status,
promote, abort, and the automatic rollback the monitoring process decides.

Each step checks the permission table and is audited in its own transaction (a following server
notices it by the audit head). Promoting never bypasses four eyes: for a protected alias it files
the promotion request (``services.promotions``) and the rollout ends promoted once that request
is approved and ``promote`` runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockyard.errors import Conflict, InvalidInput
from dockyard.governance.policy import Policy
from dockyard.registry.audit import AuditEntry
from dockyard.registry.promotions import PENDING, Promotion, PromotionStore
from dockyard.registry.records import ModelVersion, Rollout
from dockyard.registry.refs import DEFAULT_ALIAS, ModelRef, check_name
from dockyard.registry.rollouts import (
    ABORTED,
    CANARY,
    MODES,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    RolloutPlan,
    RolloutStore,
)
from dockyard.registry.tables import NAME_LENGTH
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.promotions import request_promotion
from dockyard.services.workspace import Workspace

ROLLBACK_ACTOR = "system:rollout"
MIN_PERCENT = 1
MAX_PERCENT = 99
SHADOW_PERCENT = 100
"""A shadow rollout mirrors every request."""


@dataclass(frozen=True)
class RolloutPromotion:
    """What ``promote`` did: the rollout (ended ``promoted``, or still active while the promotion
    request of its protected alias waits for an approver) and that request, when one was filed."""

    rollout: Rollout
    promotion: Promotion | None = None

    def to_dict(self) -> dict[str, Any]:
        promotion = None if self.promotion is None else self.promotion.to_dict()
        return {"rollout": self.rollout.to_dict(), "promotion": promotion}


def start_rollout(
    workspace: Workspace,
    actor: Principal,
    name: str,
    version: int,
    *,
    mode: str = CANARY,
    percent: int | None = None,
    sticky: str | None = None,
    alias: str = DEFAULT_ALIAS,
) -> Rollout:
    """Start rolling out ``name:version`` beside the version ``alias`` points at now: Conflict
    while the model has an active rollout or when the candidate is that version or archived;
    audited ``rollout.start``."""
    require(actor, SERVICES["start_rollout"], name)
    share = _check_mode(mode, percent, sticky)
    stable = workspace.store.resolve(ModelRef(check_name(name), alias=check_name(alias, "alias")))
    candidate = workspace.store.get_version(name, version)
    _check_candidate(stable, candidate, alias)
    plan = RolloutPlan(name, alias, stable.version, version, mode, share, sticky)

    def entry(started: Rollout) -> AuditEntry:
        details = {
            "id": started.id,
            "mode": mode,
            "percent": share,
            "sticky": sticky,
            "alias": alias,
            "stable": stable.version,
            "candidate": version,
        }
        return AuditEntry(actor.actor, "rollout.start", started.target, name, details)

    return RolloutStore(workspace.store.engine).start(plan, actor.actor, entry)


def rollout_status(workspace: Workspace, name: str) -> Rollout:
    """The model's active rollout, else its latest; NotFound saying how to start one."""
    return RolloutStore(workspace.store.engine).current(check_name(name))


def promote_rollout(
    workspace: Workspace, actor: Principal, name: str, comment: str = ""
) -> RolloutPromotion:
    """Point the rollout's alias at its candidate and end it ``promoted`` (audited
    ``rollout.promote`` and ``alias.move``). A protected alias moves only through an approved
    promotion: the first call files the request (audited ``promotion.request``), a call while it
    is pending is a Conflict naming it, and a call after its approval ends the rollout."""
    require(actor, SERVICES["promote_rollout"], name)
    active = _active(workspace, name)
    if not Policy.of(workspace.settings).is_protected(active.alias):
        ended = _end(workspace, actor.actor, active, PROMOTED, comment, move_alias=True)
        return RolloutPromotion(ended)
    current = workspace.store.resolve(ModelRef(name, alias=active.alias))
    if current.version == active.candidate:
        ended = _end(workspace, actor.actor, active, PROMOTED, comment or "promotion approved")
        return RolloutPromotion(ended)
    for pending in PromotionStore(workspace.store.engine).all(name, PENDING):
        if pending.alias == active.alias and pending.version == active.candidate:
            raise Conflict(
                f"promotion {pending.id} of {name}:{active.candidate} to @{active.alias} is "
                f"pending: have an approver approve it (dockyard approvals approve {pending.id}), "
                f"then run dockyard rollout promote {name} again"
            )
    promotion = request_promotion(workspace, actor, name, active.candidate, active.alias, comment)
    return RolloutPromotion(active, promotion)


def abort_rollout(workspace: Workspace, actor: Principal, name: str, reason: str = "") -> Rollout:
    """End the model's active rollout ``aborted``: the alias stays on the stable version; audited
    ``rollout.abort``."""
    require(actor, SERVICES["abort_rollout"], name)
    return _end(workspace, actor.actor, _active(workspace, name), ABORTED, reason)


def roll_back(workspace: Workspace, rollout: Rollout, reason: str) -> Rollout | None:
    """End ``rollout`` ``rolled_back`` as ``system:rollout``, saying why (audited
    ``rollout.rollback``): the monitoring process's decision, so it needs no principal. None when
    it had ended already (another process, or a person, acted first)."""
    try:
        return _end(workspace, ROLLBACK_ACTOR, rollout, ROLLED_BACK, reason)
    except Conflict:
        if RolloutStore(workspace.store.engine).current(rollout.model).is_active:
            raise
        return None


def _end(
    workspace: Workspace,
    actor: str,
    rollout: Rollout,
    state: str,
    reason: str,
    *,
    move_alias: bool = False,
) -> Rollout:
    action = {PROMOTED: "promote", ABORTED: "abort", ROLLED_BACK: "rollback"}[state]

    def entries(ended: Rollout) -> list[AuditEntry]:
        details = {
            "id": ended.id,
            "stable": ended.stable,
            "candidate": ended.candidate,
            "alias": ended.alias,
            "reason": reason,
        }
        found = [AuditEntry(actor, f"rollout.{action}", ended.target, ended.model, details)]
        if move_alias:
            move = {"alias": ended.alias, "version": ended.candidate, "previous": ended.stable}
            found.append(
                AuditEntry(actor, "alias.move", f"{ended.model}@{ended.alias}", ended.model, move)
            )
        return found

    return RolloutStore(workspace.store.engine).end(
        rollout.id, state, actor, reason, entries, move_alias=move_alias
    )


def _active(workspace: Workspace, name: str) -> Rollout:
    found = rollout_status(workspace, name)
    if not found.is_active:
        raise Conflict(
            f"{name} has no active rollout: its last, rollout {found.id} of version "
            f"{found.candidate}, was {found.state} by {found.ended_by}"
        )
    return found


def _check_mode(mode: str, percent: int | None, sticky: str | None) -> int:
    """The share of requests the candidate gets: ``percent`` for a canary, all for a shadow."""
    if mode not in MODES:
        raise InvalidInput(f"unknown rollout mode {mode!r}; use one of {', '.join(MODES)}")
    if sticky is not None and not 0 < len(sticky) <= NAME_LENGTH:
        raise InvalidInput(f"the sticky field must be 1-{NAME_LENGTH} characters long")
    if mode == SHADOW:
        if percent is not None or sticky is not None:
            raise InvalidInput("a shadow rollout mirrors every request: give no percent or sticky")
        return SHADOW_PERCENT
    if percent is None or not MIN_PERCENT <= percent <= MAX_PERCENT:
        raise InvalidInput(
            f"a canary needs the percent of requests for the candidate, {MIN_PERCENT} to "
            f"{MAX_PERCENT} (--canary 10); got {percent}"
        )
    return percent


def _check_candidate(stable: ModelVersion, candidate: ModelVersion, alias: str) -> None:
    if candidate.version == stable.version:
        raise Conflict(
            f"{stable.model}@{alias} points at {candidate.ref} already: nothing to roll out"
        )
    if candidate.archived:
        raise Conflict(f"{candidate.ref} is archived: unarchive it first to roll it out")
    wanted = [spec.name for spec in stable.signature.inputs]
    taken = [spec.name for spec in candidate.signature.inputs]
    if wanted != taken:
        raise InvalidInput(
            f"{candidate.ref} takes inputs {', '.join(taken)} where {stable.ref} takes "
            f"{', '.join(wanted)}: the same requests must suit both to roll it out"
        )
