"""Rollouts under ``/api``: start a canary or shadow rollout, read its state, promote or abort it,
through the same services as ``dockyard rollout``, acting as the request's principal."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from dockyard.errors import InvalidInput
from dockyard.services import rollouts
from dockyard.serving.api_requests import (
    STRING,
    json_body,
    json_schema,
    optional_comment,
    principal_of,
    workspace_of,
)

START_SHAPE = (
    '{"version": 5, "mode": "canary", "percent": 10, "sticky": "user", "alias": "production"}'
)
START_SCHEMA = json_schema(
    {"version": 5, "mode": "canary", "percent": 10},
    {
        "version": {"type": "integer", "minimum": 1},
        "mode": {"type": "string", "enum": ["canary", "shadow"]},
        "percent": {"type": "integer", "minimum": 1, "maximum": 99},
        "sticky": STRING,
        "alias": STRING,
    },
)
END_SCHEMA = json_schema({"comment": "p99 fine for a day"}, {"comment": STRING})
START_FIELDS = frozenset({"version", "mode", "percent", "sticky", "alias"})


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Rollouts"])

    @router.post(
        "/models/{name}/rollouts",
        summary="Start a canary or shadow rollout of a version",
        openapi_extra=START_SCHEMA,
    )
    async def start(request: Request, name: str) -> JSONResponse:
        body = await json_body(request, START_SHAPE)
        unknown = sorted(set(body) - START_FIELDS)
        if unknown:
            raise InvalidInput(f"unknown field {unknown[0]!r}: {START_SHAPE}")
        version, percent = body.get("version"), body.get("percent")
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidInput(f"'version' must be a whole number: {START_SHAPE}")
        if percent is not None and not _whole(percent):
            raise InvalidInput(f"'percent' must be a whole number: {START_SHAPE}")
        options = {key: _text(body, key) for key in ("mode", "sticky", "alias") if key in body}
        started = await run_in_threadpool(
            rollouts.start_rollout,
            workspace_of(request),
            principal_of(request),
            name,
            version,
            percent=percent,
            **options,
        )
        return JSONResponse(started.to_dict(), status_code=201)

    @router.get("/models/{name}/rollout", summary="The model's active (else latest) rollout")
    async def status(request: Request, name: str) -> dict[str, Any]:
        found = await run_in_threadpool(rollouts.rollout_status, workspace_of(request), name)
        return found.to_dict()

    @router.post(
        "/models/{name}/rollout/promote",
        summary="Promote the candidate (a protected alias: files its promotion request)",
        openapi_extra=END_SCHEMA,
    )
    async def promote(request: Request, name: str) -> dict[str, Any]:
        comment = await optional_comment(request)
        outcome = await run_in_threadpool(
            rollouts.promote_rollout, workspace_of(request), principal_of(request), name, comment
        )
        return outcome.to_dict()

    @router.post(
        "/models/{name}/rollout/abort",
        summary="Abort the rollout: the stable version keeps serving",
        openapi_extra=END_SCHEMA,
    )
    async def abort(request: Request, name: str) -> dict[str, Any]:
        comment = await optional_comment(request)
        ended = await run_in_threadpool(
            rollouts.abort_rollout, workspace_of(request), principal_of(request), name, comment
        )
        return ended.to_dict()

    return router


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise InvalidInput(f"{key!r} must be a string: {START_SHAPE}")
    return value
