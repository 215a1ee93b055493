"""KServe V1 routes: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from dockyard.serving.bodies import receive_body
from dockyard.serving.gateway import Gateway
from dockyard.serving.inference import predict_v1

PREDICT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {"instances": {"type": "array"}},
                },
                "example": {"instances": [[1.0, 2.0]]},
            }
        },
    }
}


def build_router(max_body_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["KServe V1"])

    @router.get("/models/{name}", summary="Model status")
    async def model_status(request: Request, name: str) -> dict[str, Any]:
        gateway: Gateway = request.app.state.gateway
        gateway.deployment(name)
        return {"name": name, "ready": True}

    @router.post("/models/{name}:predict", summary="Predict", openapi_extra=PREDICT_SCHEMA)
    async def predict(request: Request, name: str) -> Response:
        """Documented here; served by the pure ASGI hot path (``serving.hotpath``)."""
        gateway: Gateway = request.app.state.gateway
        answer = await predict_v1(
            gateway, name, lambda: receive_body(request.headers, request.receive, max_body_bytes)
        )
        return Response(answer.body, media_type=answer.content_type)

    return router
