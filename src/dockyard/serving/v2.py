"""Open Inference Protocol V2 REST routes: health, metadata, readiness and inference."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from dockyard.errors import NotReady
from dockyard.registry.records import TensorSpec
from dockyard.serving.bodies import receive_body
from dockyard.serving.deployments import PLATFORMS, Deployment
from dockyard.serving.failures import public_message
from dockyard.serving.gateway import Gateway, LoadFailure
from dockyard.serving.inference import infer_v2

SERVER_NAME = "dockyard"
EXTENSIONS = ["binary_tensor_data"]
READY = "ready"
FAILED = "failed"
"""A model's ``state`` in its metadata; a failed one also has a ``reason`` (why it did not load)."""
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "parameters": {"type": "object"},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "example": {
                    "inputs": [
                        {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}
                    ]
                },
            }
        },
    }
}


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _model_metadata(deployment: Deployment, versions: list[str]) -> dict[str, Any]:
    signature = deployment.version.signature
    return {
        "name": deployment.name,
        "versions": versions,
        "platform": deployment.platform,
        "inputs": [_tensor_metadata(spec) for spec in signature.inputs],
        "outputs": [_tensor_metadata(spec) for spec in signature.outputs],
        "parameters": {"tabular": signature.tabular, "framework": deployment.version.framework},
        "state": READY,
    }


def _failed_metadata(failure: LoadFailure) -> dict[str, Any]:
    """Metadata of a model that failed to load: what is known of its version, and the reason."""
    version = failure.version
    if version is None:
        described: dict[str, Any] = {"versions": [], "platform": "", "inputs": [], "outputs": []}
    else:
        signature = version.signature
        described = {
            "versions": [str(version.version)],
            "platform": PLATFORMS.get(version.framework, version.framework),
            "inputs": [_tensor_metadata(spec) for spec in signature.inputs],
            "outputs": [_tensor_metadata(spec) for spec in signature.outputs],
            "parameters": {"tabular": signature.tabular, "framework": version.framework},
        }
    return {
        "name": failure.name,
        **described,
        "state": FAILED,
        "reason": public_message(failure.reason),
    }


def build_router(version: str, max_body_bytes: int) -> APIRouter:
    """The V2 routes; ``version`` is Dockyard's own version for server metadata."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol V2"])

    @router.get("/health/live", summary="Server live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="Server ready")
    async def ready(request: Request) -> dict[str, bool]:
        if not _gateway(request).is_ready():
            raise NotReady("no model is loaded yet")
        return {"ready": True}

    @router.get("", summary="Server metadata")
    @router.get("/", include_in_schema=False)
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS}

    @router.get("/models/{name}", summary="Model metadata")
    @router.get("/models/{name}/versions/{model_version}", summary="Model version metadata")
    async def model_metadata(
        request: Request, name: str, model_version: str | None = None
    ) -> dict[str, Any]:
        gateway = _gateway(request)
        failure = gateway.failure(name, model_version)
        if failure is not None:
            return _failed_metadata(failure)
        deployment = gateway.deployment(name, model_version)
        versions = [str(d.version.version) for d in gateway.deployments(name)]
        return _model_metadata(deployment, versions)

    @router.get("/models/{name}/ready", summary="Model ready")
    @router.get("/models/{name}/versions/{model_version}/ready", summary="Model version ready")
    async def model_ready(
        request: Request, name: str, model_version: str | None = None
    ) -> dict[str, Any]:
        """200 when it serves; 503 naming the reason when it failed to load."""
        _gateway(request).deployment(name, model_version)
        return {"name": name, "ready": True}

    @router.post("/models/{name}/infer", summary="Inference", openapi_extra=INFER_REQUEST_SCHEMA)
    @router.post(
        "/models/{name}/versions/{model_version}/infer",
        summary="Inference on a version",
        openapi_extra=INFER_REQUEST_SCHEMA,
    )
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        """Documented here; served by the pure ASGI hot path (``serving.hotpath``)."""
        headers = request.headers
        answer = await infer_v2(
            _gateway(request),
            name,
            model_version,
            headers,
            lambda: receive_body(headers, request.receive, max_body_bytes),
        )
        return Response(answer.body, media_type=answer.content_type, headers=answer.headers)

    return router
