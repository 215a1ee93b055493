"""KServe V1 routes: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from dockyard.registry.signatures import prepare_input
from dockyard.serving.bodies import read_body
from dockyard.serving.gateway import Gateway
from dockyard.serving.instances import decode_v1, encode_v1

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
        gateway: Gateway = request.app.state.gateway
        deployment = gateway.deployment(name)
        body = await read_body(request, max_body_bytes)
        signature = deployment.version.signature
        x = prepare_input(signature, decode_v1(body, signature))
        result = await deployment.infer(x, ())
        return Response(encode_v1(result, signature.outputs[0].name), media_type="application/json")

    return router
