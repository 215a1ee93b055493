"""Model cards and compliance reports over HTTP: ``GET`` and ``PUT
/api/models/{name}/versions/{version}/card`` (``read_model``, ``update_model``) and ``GET
/api/models/{name}/report`` (``read_audit``), through the same services as the CLI.

One report at a time per worker: each may read up to the dashboard's cap of logged rows, so
concurrent callers take turns rather than multiply the memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dockyard.errors import InvalidInput
from dockyard.governance.cards import CARD_FIELDS, card_document
from dockyard.governance.rendering import REPORT_FORMATS, render_card, render_report
from dockyard.registry.refs import ModelRef, check_name
from dockyard.services import cards
from dockyard.services.report import build_report
from dockyard.serving.api_requests import (
    JSON_TYPE,
    STRING,
    json_body,
    json_schema,
    principal_of,
    workspace_of,
)

MEDIA_TYPES = {
    "json": JSON_TYPE,
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
CARD_SCHEMA = json_schema(
    {
        "intended_use": "Score card payments for fraud review.",
        "limitations": "Trained on EU traffic of 2025 only.",
        "owners": ["risk-team@example.com"],
    },
    {**{name: STRING for name in CARD_FIELDS}, "owners": {"type": "array", "items": STRING}},
)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Governance"])
    turn = asyncio.Lock()

    @router.get(
        "/models/{name}/versions/{version}/card",
        summary="A version's model card, with its lineage",
        response_class=Response,
    )
    async def get_card(request: Request, name: str, version: int, format: str = "json") -> Response:
        """The card's fields (and the ones it leaves blank) beside the version's lineage: data
        fingerprint, code commit, parent, environment, who and when; as JSON, Markdown or
        HTML."""
        ref = str(ModelRef(check_name(name), version=version))
        found = await run_in_threadpool(
            cards.read_card, workspace_of(request), principal_of(request), ref
        )
        return _answer(render_card(card_document(found), format), format)

    @router.put(
        "/models/{name}/versions/{version}/card",
        summary="Set a version's model card",
        openapi_extra=CARD_SCHEMA,
    )
    async def put_card(request: Request, name: str, version: int) -> dict[str, Any]:
        """Replace the card with the body's fields (a blank one is left out); audited as
        ``card.set`` with the fields that changed."""
        body = await json_body(request, "of the card's fields")
        stored = await run_in_threadpool(
            cards.set_card, workspace_of(request), principal_of(request), name, version, body
        )
        return card_document(stored)

    @router.get(
        "/models/{name}/report",
        summary="A version's compliance report",
        response_class=Response,
    )
    async def report(
        request: Request,
        name: str,
        version: int | None = None,
        format: str = "html",
        window: str | None = None,
    ) -> Response:
        """Card, lineage, approvals, the policy's gates now, the model's audit trail and a
        monitoring summary over ``window`` (default 30d) of ``version`` (default: the
        production alias's, else the latest): one HTML page that loads nothing, or JSON."""
        if format not in REPORT_FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(REPORT_FORMATS)}")
        async with turn:
            data = await run_in_threadpool(
                build_report,
                workspace_of(request),
                principal_of(request),
                name,
                version,
                window=window,
            )
        return _answer(render_report(data, format), format)

    return router


def _answer(text: str, format: str) -> Response:
    return Response(text, media_type=MEDIA_TYPES[format])
