"""Four-eyes promotion: moving a protected alias is requested by one principal, with every gate
of the policy passing, and approved by another with the approver role who neither registered the
version nor requested the move; the alias moves only with the approval.

``check`` is ``dockyard policy check`` and ``GET .../policy``: every gate, without changing
anything.
"""

from __future__ import annotations

from functools import partial

from dockyard.errors import Conflict, Forbidden, InvalidInput
from dockyard.governance.gates import Evidence, PolicyCheck, check_gates
from dockyard.governance.policy import Policy
from dockyard.registry.audit import AuditEntry
from dockyard.registry.promotions import Promotion, PromotionStore, check_pending
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import DEFAULT_ALIAS, check_name
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.signatures import check_signed
from dockyard.services.workspace import Workspace


def check(workspace: Workspace, ref: str, alias: str | None = None) -> PolicyCheck:
    """Every gate of the policy for pointing ``alias`` (default: the first protected alias) at
    the version ``ref`` names. The policy is read first: a mistake in it is the error."""
    policy = Policy.of(workspace.settings)
    version = workspace.resolve(ref)
    if alias is None:
        alias = policy.protected_aliases[0] if policy.protected_aliases else DEFAULT_ALIAS
    return _check(workspace, policy, version, alias)


def _check(workspace: Workspace, policy: Policy, version: ModelVersion, alias: str) -> PolicyCheck:
    evidence = Evidence(
        settings=workspace.settings,
        store=workspace.store,
        artifacts=workspace.artifacts,
        check_signed=partial(check_signed, workspace),
    )
    return check_gates(policy, evidence, version, check_name(alias, "alias"))


def request_promotion(
    workspace: Workspace,
    actor: Principal,
    name: str,
    version: int,
    alias: str,
    comment: str = "",
) -> Promotion:
    """Open a request to point the protected ``alias`` at ``name:version``: Conflict naming each
    failing gate, or while another request for the alias is pending; audited as
    ``promotion.request`` with the gates' results."""
    require(actor, SERVICES["request_promotion"], name)
    policy = Policy.of(workspace.settings)
    check_name(alias, "alias")
    if not policy.is_protected(alias):
        raise InvalidInput(
            f"alias {alias!r} is not protected: move it directly with `dockyard models alias "
            f"{name} {alias} {version}` (PUT /api/models/{name}/aliases/{alias})"
        )
    checked = _check(workspace, policy, workspace.store.get_version(name, version), alias)
    if checked.current is not None and checked.current.version == version:
        raise Conflict(f"{name}@{alias} points at {name}:{version} already")
    if not checked.passed:
        raise Conflict(f"cannot promote {name}:{version} to @{alias}: {checked.refusal()}")
    gates = [gate.to_dict() for gate in checked.gates]

    def entry(request: Promotion) -> AuditEntry:
        details = {"id": request.id, "version": version, "alias": alias, "comment": comment}
        details["gates"] = gates
        return AuditEntry(actor.actor, "promotion.request", request.target, name, details)

    return PromotionStore(workspace.store.engine).create(
        checked.version, alias, actor.actor, comment, gates, entry
    )


def approve(
    workspace: Workspace, actor: Principal, promotion_id: int, comment: str = ""
) -> Promotion:
    """Approve a pending request: the gates are checked again (Conflict naming each failing
    one) and the alias moves in the approval's transaction (audited ``promotion.approve`` and
    ``alias.move``). Forbidden for the version's registrant and the request's requester."""
    found = _decidable(workspace, actor, promotion_id, "approve_promotion")
    checked = check(workspace, f"{found.model}:{found.version}", found.alias)
    if not checked.passed:
        raise Conflict(
            f"cannot approve promotion {found.id} of {found.model}:{found.version} to "
            f"@{found.alias}: {checked.refusal()}"
        )
    previous = None if checked.current is None else checked.current.version

    def entries(decided: Promotion) -> list[AuditEntry]:
        details = {"id": decided.id, "version": decided.version, "alias": decided.alias}
        return [
            AuditEntry(
                actor.actor,
                "promotion.approve",
                decided.target,
                decided.model,
                {**details, "comment": comment, "gates": [g.to_dict() for g in checked.gates]},
            ),
            AuditEntry(
                actor.actor,
                "alias.move",
                f"{decided.model}@{decided.alias}",
                decided.model,
                {**details, "previous": previous},
            ),
        ]

    return PromotionStore(workspace.store.engine).decide(
        found.id, approve=True, decided_by=actor.actor, comment=comment, audit=entries
    )


def reject(workspace: Workspace, actor: Principal, promotion_id: int, comment: str) -> Promotion:
    """Reject a pending request, saying why (``comment`` is required); audited
    ``promotion.reject``. The same four-eyes rule as ``approve``."""
    if not comment.strip():
        raise InvalidInput("a rejection needs a comment saying why (--comment)")
    found = _decidable(workspace, actor, promotion_id, "reject_promotion")

    def entries(decided: Promotion) -> list[AuditEntry]:
        details = {"id": decided.id, "version": decided.version, "alias": decided.alias}
        return [
            AuditEntry(
                actor.actor,
                "promotion.reject",
                decided.target,
                decided.model,
                {**details, "comment": comment},
            )
        ]

    return PromotionStore(workspace.store.engine).decide(
        found.id, approve=False, decided_by=actor.actor, comment=comment, audit=entries
    )


def list_promotions(
    workspace: Workspace, actor: Principal, model: str | None = None, state: str | None = None
) -> list[Promotion]:
    """The requests ``actor`` may see (its models), newest first, of ``model`` and in ``state``
    when given."""
    found = PromotionStore(workspace.store.engine).all(model, state)
    return [promotion for promotion in found if actor.sees(promotion.model)]


def _decidable(
    workspace: Workspace, actor: Principal, promotion_id: int, service: str
) -> Promotion:
    """The request ``actor`` may decide: the approver role, and four eyes (neither the
    version's registrant nor the request's requester)."""
    require(actor, SERVICES[service])
    found = PromotionStore(workspace.store.engine).get(promotion_id)
    require(actor, SERVICES[service], found.model)
    check_pending(found)
    registrant = workspace.store.get_version(found.model, found.version).created_by
    if actor.actor == found.requested_by:
        raise Forbidden(
            f"{actor.actor} requested promotion {found.id} and cannot also decide it (four "
            "eyes): another approver must"
        )
    if actor.actor == registrant:
        raise Forbidden(
            f"{actor.actor} registered {found.model}:{found.version} and cannot decide its "
            f"promotion {found.id} (four eyes): another approver must"
        )
    return found
