"""The prediction log and delayed labels over HTTP: ``GET /api/models/{name}/predictions`` (needs
``read_predictions``) and ``POST /v2/models/{name}/feedback`` (needs ``send_feedback``).

Both read and write files, so the work runs in a worker thread. A read is bounded by ``limit``
rows (the newest of the window; the reader stops at the segments it needs); a body by
``max_body_bytes``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.monitoring.feedback import MAX_LABELS, labels_from_json, store_labels
from dockyard.monitoring.predlog import (
    EXPORT_LIMIT,
    FORMATS,
    MEDIA_TYPES,
    encode_table,
    log_cipher,
    read_predictions,
)
from dockyard.registry.refs import check_name
from dockyard.registry.store import utc_now
from dockyard.security.keystore import parse_duration
from dockyard.security.principals import Principal
from dockyard.services.workspace import Workspace
from dockyard.serving.bodies import receive_body

JSON_TYPE = "application/json"
VERSION_MAX = 2**31 - 1
FEEDBACK_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["labels"],
                    "properties": {
                        "labels": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_LABELS,
                            "items": {
                                "type": "object",
                                "required": ["request_id", "label"],
                                "properties": {
                                    "request_id": {"type": "string"},
                                    "row": {"type": "integer", "minimum": 0, "default": 0},
                                    "label": {"type": ["number", "string"]},
                                },
                            },
                        }
                    },
                },
                "example": {"labels": [{"request_id": "4d2-1f", "row": 0, "label": 1}]},
            }
        },
    }
}


def build_router() -> APIRouter:
    router = APIRouter(tags=["Monitoring"])

    @router.get(
        "/api/models/{name}/predictions",
        summary="The prediction log: the newest rows of a time window",
        response_class=Response,
    )
    async def predictions(
        request: Request,
        name: str,
        since: str = "1h",
        version: int | None = None,
        limit: int = 1000,
        format: str = "json",
    ) -> Response:
        """Logged rows of the last ``since`` (``30m``, ``1h``, ``7d``), the newest ``limit`` of
        them in time order, of one ``version`` if given: JSON (an array of rows), CSV or
        Parquet."""
        if format not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if not 1 <= limit <= EXPORT_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {EXPORT_LIMIT}")
        if version is not None and not 1 <= version <= VERSION_MAX:
            raise InvalidInput(f"version must be between 1 and {VERSION_MAX}")
        start = utc_now() - parse_duration(since)
        workspace, settings = _workspace(request), _settings(request)
        await run_in_threadpool(workspace.store.get_model, check_name(name))

        def read() -> bytes:
            table = read_predictions(
                workspace.home,
                name,
                since=start,
                version=version,
                cipher=log_cipher(settings, workspace.home),
                limit=limit,
            )
            return encode_table(table, format)

        body = await run_in_threadpool(read)
        headers = {}
        if format != "json":  # a file to save, named after the model (a checked name)
            headers["Content-Disposition"] = f'attachment; filename="{name}-predictions.{format}"'
        return Response(body, media_type=MEDIA_TYPES[format], headers=headers)

    @router.post(
        "/v2/models/{name}/feedback",
        summary="Attach ground-truth labels to logged predictions",
        openapi_extra=FEEDBACK_SCHEMA,
    )
    async def feedback(request: Request, name: str) -> JSONResponse:
        """Labels for requests by their id (the ``X-Request-ID`` of the answer) and row: the
        live accuracy (or error) of each version is computed from them."""
        workspace, settings = _workspace(request), _settings(request)
        if _media_type(request) != JSON_TYPE:
            raise InvalidInput(f"Content-Type must be {JSON_TYPE}")
        raw = await receive_body(request.headers, request.receive, settings.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from None
        labels = await run_in_threadpool(labels_from_json, body)
        await run_in_threadpool(workspace.store.get_model, check_name(name))
        principal: Principal = request.state.principal
        cipher = log_cipher(settings, workspace.home)
        count = await run_in_threadpool(
            store_labels, workspace.home, workspace.store, name, labels, principal, cipher
        )
        return JSONResponse({"model": name, "labels": count})

    return router


def _workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()
