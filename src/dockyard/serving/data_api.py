"""``POST /api/data/erase``: the right to erasure over HTTP (``erase_data``: admins), through the
same service as ``dockyard data erase``, acting as the request's principal. It waits out one
flush of the log writers first (``services.erasure``), so it runs in a worker thread."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from dockyard.errors import InvalidInput
from dockyard.services.erasure import erase_subject
from dockyard.serving.api_requests import json_body, json_schema, principal_of, workspace_of

SHAPE = '{"feature": "email", "value": "ann@example.com", "model": "fraud" (optional)}'
FIELDS = ("feature", "value", "model")
ERASE_SCHEMA = json_schema(
    {"feature": "customer_id", "value": "C-1042", "model": "fraud"},
    {
        "feature": {"type": "string"},
        "value": {"type": ["string", "number"]},
        "model": {"type": "string"},
    },
)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Governance"])

    @router.post(
        "/data/erase",
        summary="Erase every logged record of one data subject (the right to erasure)",
        openapi_extra=ERASE_SCHEMA,
    )
    async def erase(request: Request) -> dict[str, Any]:
        """Removes the prediction-log rows whose input ``feature`` equals ``value`` (of one
        ``model``, or of all), the labels sent for them and the value where drift reports quote
        it; the audit trail records the feature and the counts, never the value. Answers the
        counts removed per model."""
        body = await json_body(request, SHAPE)
        unknown = [key for key in body if key not in FIELDS]
        if unknown:
            raise InvalidInput(f"unknown field {unknown[0]!r}; the body is {SHAPE}")
        feature, value, model = body.get("feature"), body.get("value"), body.get("model")
        if not isinstance(feature, str) or not feature:
            raise InvalidInput(f"'feature' must be the name of a model input: {SHAPE}")
        if model is not None and not isinstance(model, str):
            raise InvalidInput(f"'model' must be a model name: {SHAPE}")
        erasure = await run_in_threadpool(
            erase_subject, workspace_of(request), principal_of(request), feature, value, model
        )
        return erasure.to_dict()

    return router
