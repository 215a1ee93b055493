"""``GET /api/audit`` and ``GET /api/audit/verify``: the audit trail and the check of its hash
chain, for the auditor, approver and admin roles (``read_audit``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from dockyard.errors import Forbidden, InvalidInput
from dockyard.registry.audit import count_entries, read_entries
from dockyard.registry.audit_chain import verify
from dockyard.registry.store import utc_now
from dockyard.security.keystore import parse_since
from dockyard.security.principals import Principal
from dockyard.services.workspace import Workspace

MAX_LIMIT = 100_000


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Governance"])

    @router.get("/audit", summary="Audit entries, oldest first (the newest `limit`)")
    async def audit(
        request: Request,
        model: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Entries of ``model``, by ``actor`` (``alice``, ``key:ci``), since ``since`` (``1h``,
        ``7d`` or an ISO time). A key scoped to some models must name one of them."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        principal: Principal = request.state.principal
        if principal.models is not None and (model is None or not principal.sees(model)):
            raise Forbidden(
                f"{principal.actor} may read the audit entries of its models only: ask for one "
                f"with ?model= ({', '.join(sorted(principal.models))})"
            )
        start = parse_since(since, utc_now()) if since else None
        workspace: Workspace = request.app.state.workspace
        entries = await run_in_threadpool(
            read_entries,
            workspace.store.engine,
            model=model,
            actor=actor,
            since=start,
            limit=limit,
        )
        return [entry.to_dict() for entry in entries]

    @router.get("/audit/verify", summary="Check the audit trail's hash chain")
    async def audit_verify(request: Request) -> dict[str, Any]:
        """``valid``, the number of ``entries`` and each problem found (the entry's ``seq``, its
        ``kind``: edited, deleted, inserted, reordered, and a ``message``)."""
        workspace: Workspace = request.app.state.workspace
        problems = await run_in_threadpool(verify, workspace.store.engine)
        entries = await run_in_threadpool(count_entries, workspace.store.engine)
        return {
            "valid": not problems,
            "entries": entries,
            "problems": [problem.to_dict() for problem in problems],
        }

    return router
