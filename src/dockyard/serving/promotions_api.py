"""Policy and four-eyes promotion under ``/api``: a version's gates, promotion requests, and their
approval or rejection, through the same services as ``dockyard policy``, ``promote`` and
``approvals``, acting as the request's principal."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from dockyard.errors import InvalidInput
from dockyard.registry.refs import check_name
from dockyard.services import promotions
from dockyard.serving.api_requests import (
    STRING,
    comment_of,
    json_body,
    json_schema,
    optional_comment,
    principal_of,
    workspace_of,
)

REQUEST_SHAPE = '{"version": 4, "alias": "production", "comment": "..."}'
REQUEST_SCHEMA = json_schema(
    {"version": 4, "alias": "production", "comment": "beats v3 on last week's labels"},
    {"version": {"type": "integer", "minimum": 1}, "alias": STRING, "comment": STRING},
)
DECISION_SCHEMA = json_schema({"comment": "reviewed the card and the gates"}, {"comment": STRING})


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Governance"])

    @router.get(
        "/models/{name}/versions/{version}/policy",
        summary="Every gate of the policy for pointing an alias at a version",
    )
    async def check_policy(
        request: Request, name: str, version: int, alias: str | None = None
    ) -> dict[str, Any]:
        """``alias``: default the first protected alias (``production``)."""
        ref = f"{check_name(name)}:{version}"
        checked = await run_in_threadpool(promotions.check, workspace_of(request), ref, alias)
        return checked.to_dict()

    @router.post(
        "/models/{name}/promotions",
        summary="Request moving a protected alias to a version (four eyes)",
        openapi_extra=REQUEST_SCHEMA,
    )
    async def request_promotion(request: Request, name: str) -> JSONResponse:
        body = await json_body(request, REQUEST_SHAPE)
        version, alias = body.get("version"), body.get("alias")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInput(f"'version' must be a whole number: {REQUEST_SHAPE}")
        if not isinstance(alias, str):
            raise InvalidInput(f"'alias' must be a string: {REQUEST_SHAPE}")
        created = await run_in_threadpool(
            promotions.request_promotion,
            workspace_of(request),
            principal_of(request),
            name,
            version,
            alias,
            comment_of(body, REQUEST_SHAPE),
        )
        return JSONResponse(created.to_dict(), status_code=201)

    @router.get("/promotions", summary="Promotion requests, newest first")
    async def list_promotions(
        request: Request, model: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        found = await run_in_threadpool(
            promotions.list_promotions,
            workspace_of(request),
            principal_of(request),
            model or None,
            state or None,
        )
        return [promotion.to_dict() for promotion in found]

    @router.post(
        "/promotions/{promotion_id}/approve",
        summary="Approve a promotion request: the alias moves",
        openapi_extra=DECISION_SCHEMA,
    )
    async def approve(request: Request, promotion_id: int) -> dict[str, Any]:
        comment = await optional_comment(request)
        decided = await run_in_threadpool(
            promotions.approve, workspace_of(request), principal_of(request), promotion_id, comment
        )
        return decided.to_dict()

    @router.post(
        "/promotions/{promotion_id}/reject",
        summary="Reject a promotion request, saying why",
        openapi_extra=DECISION_SCHEMA,
    )
    async def reject(request: Request, promotion_id: int) -> dict[str, Any]:
        comment = await optional_comment(request)
        decided = await run_in_threadpool(
            promotions.reject, workspace_of(request), principal_of(request), promotion_id, comment
        )
        return decided.to_dict()

    return router
