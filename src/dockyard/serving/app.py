"""The ASGI application: routes, the middleware list and the one error handler."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard import __version__
from dockyard.config import Settings
from dockyard.errors import DockyardError, MissingExtra, NotFound
from dockyard.home import Home
from dockyard.monitoring.metrics import CONTENT_TYPE, Served
from dockyard.monitoring.monitor import Monitor
from dockyard.reliability.logs import REQUEST_ID as CURRENT_REQUEST_ID
from dockyard.reliability.logs import access
from dockyard.reliability.supervisor import server_token
from dockyard.services.workspace import Workspace
from dockyard.serving import (
    alerts_api,
    audit_api,
    cards_api,
    data_api,
    drift_api,
    management,
    monitoring_api,
    promotions_api,
    rollouts_api,
    v1,
    v2,
)
from dockyard.serving.auth import AccessGuard, Authenticator, client_of
from dockyard.serving.dashboard import add_dashboard
from dockyard.serving.docs_pages import add_docs
from dockyard.serving.failures import error_answer, hide_paths, send_error
from dockyard.serving.follow import LoopFollower
from dockyard.serving.gateway import Gateway
from dockyard.serving.guards import CrossSiteGuard, HostPolicy
from dockyard.serving.headers import SecurityHeaders
from dockyard.serving.hotpath import HotPath
from dockyard.serving.rollout_routing import ROUTES, follow_rollouts

if TYPE_CHECKING:
    from dockyard.serving.grpc_server import GrpcFront

logger = logging.getLogger(__name__)
REQUEST_ID_HEADER = b"x-request-id"
HOME_SHOWN = "$DOCKYARD_HOME"


class RequestIdMiddleware:
    """Gives every request an id (the caller's ``X-Request-ID`` if sent) and echoes it back; an
    unexpected error is answered here, a 500 naming only that id. The id goes into the logging
    context; with ``access_log``, the request is logged once answered."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (
            next((value for key, value in scope["headers"] if key == REQUEST_ID_HEADER), None)
            or uuid.uuid4().hex.encode()
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode("latin-1")
        CURRENT_REQUEST_ID.set(request_id)
        began = perf_counter()
        started = False
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", []).append((REQUEST_ID_HEADER, request_id))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered (and logged, once) here: the framework's outer error middleware would log
            # it again and re-raise it to the server, which logs it a third time.
            if started:
                raise
            await send_error(send_with_id, exc, request_id.decode("latin-1"))
        finally:
            if self.access_log:
                principal = state.get("principal")
                actor = principal.actor if principal is not None else ""
                seconds = perf_counter() - began
                access(scope["method"], scope["path"], status, seconds, client_of(scope), actor)


async def _dockyard_error(request: Request, exc: Exception) -> Response:
    status, headers, body = error_answer(exc, getattr(request.state, "request_id", "-"))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"error": f"{exc.detail}: {request.method} {request.url.path}"},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _monitor(
    settings: Settings, gateway: Gateway, auth: Authenticator, workspace: Workspace | None
) -> Monitor:
    """This worker's monitoring: its metrics follow every served version's batcher and the
    security events; they read drift and evaluations from the registry when there is one; the
    prediction log writes requests only as the personal-data rules allow."""
    engine = workspace.store.engine if workspace is not None else None
    home = Home(settings.home)
    protect = None
    if settings.prediction_log:  # the rules' module imports pyarrow, as the log does
        from dockyard.governance.anonymize import LogProtection

        protect = LogProtection(settings, home)
    monitor = Monitor.for_worker(settings, home, server_token(), engine, protect)
    metrics = monitor.metrics
    if metrics is not None:
        for name in gateway.model_names():
            for deployment in gateway.deployments(name):
                served = Served(deployment.version, deployment.load_seconds)
                metrics.watch(served, deployment.batcher)
        if auth.events is not None:
            auth.events.listener = metrics.security_event
    return monitor


def _grpc_front(
    settings: Settings, gateway: Gateway, auth: Authenticator, monitor: Monitor
) -> GrpcFront:
    """The gRPC service of this worker, started and stopped with the app (grpcio imported only
    when ``grpc_port`` is set: extra ``grpc``)."""
    try:
        from dockyard.serving.grpc_server import GrpcFront
        from dockyard.serving.grpc_service import InferenceService
    except ImportError as exc:
        raise MissingExtra("grpcio", "grpc") from exc
    service = InferenceService(gateway, auth, __version__, monitor, settings.access_log)
    return GrpcFront(settings, service)


async def _metrics(request: Request) -> Response:
    """The Prometheus text format: counts summed over every worker of this server, queue gauges
    of the live ones, the served versions' load time and age, the newest drift scores and live
    metrics."""
    metrics = request.app.state.monitor.metrics
    if metrics is None:
        raise NotFound("metrics are off on this server: set metrics = true (DOCKYARD_METRICS)")
    return Response(await metrics.exposition(), media_type=CONTENT_TYPE)


def create_app(
    settings: Settings,
    gateway: Gateway,
    auth: Authenticator,
    workspace: Workspace | None = None,
    follower: LoopFollower | None = None,
) -> ASGIApp:
    """Build the app that serves ``gateway``'s models; with a ``workspace``, also ``/api``; with
    a ``follower``, the gateway follows the registry (started and stopped with the app); with
    ``grpc_port`` set, the V2 gRPC service too, started and stopped with the app on its loop.

    The order of the layers is this function: the pure ASGI hot path (inference and health, with
    their own request ids, ``Host`` check, credentials check and security headers) in front of
    the security headers, the cross-site guard (``Host``, and ``Origin`` on state-changing
    requests), the access guard (credentials and the permission table) and FastAPI (request-id
    middleware, metadata, management, docs).
    """

    monitor = _monitor(settings, gateway, auth, workspace)
    grpc_front = _grpc_front(settings, gateway, auth, monitor) if settings.grpc_port else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with auth.running():
            await monitor.start()
            if follower is not None:
                follower.start(monitor)
            rollouts = asyncio.get_running_loop().create_task(ROUTES.refreshing())
            if grpc_front is not None:
                await grpc_front.start()
            try:
                yield
            finally:
                if grpc_front is not None:
                    await grpc_front.stop()
                rollouts.cancel()
                if follower is not None:
                    await follower.close()
                await monitor.close()

    app = FastAPI(
        title="Dockyard",
        version=__version__,
        description="Open Inference Protocol V2 and KServe V1 prediction endpoints.",
        exception_handlers={
            DockyardError: _dockyard_error,
            StarletteHTTPException: _http_error,
            Exception: _dockyard_error,
        },
        lifespan=lifespan,
        docs_url=None,  # add_docs: the pages without a CDN
        redoc_url=None,
    )
    add_docs(app)
    app.state.gateway = gateway
    app.state.auth = auth
    app.state.monitor = monitor
    app.add_api_route(
        "/metrics",
        _metrics,
        methods=["GET"],
        response_class=Response,
        summary="Prometheus metrics",
        tags=["Monitoring"],
    )
    home = settings.home
    hidden = {str(home): HOME_SHOWN, str(home.resolve()): HOME_SHOWN, sys.prefix: "$PYTHON"}
    hide_paths(hidden)
    app.include_router(v2.build_router(__version__, settings.max_body_bytes))
    app.include_router(v1.build_router(settings.max_body_bytes))
    if workspace is not None:
        app.state.workspace = workspace
        app.state.settings = settings
        app.include_router(management.build_router(settings.max_upload_bytes))
        app.include_router(alerts_api.build_router())
        app.include_router(drift_api.build_router())
        app.include_router(monitoring_api.build_router())
        app.include_router(audit_api.build_router())
        app.include_router(promotions_api.build_router())
        app.include_router(rollouts_api.build_router())
        follow_rollouts(workspace.store.engine, settings.follow_interval_s, monitor.metrics)
        app.include_router(cards_api.build_router())
        app.include_router(data_api.build_router())
        add_dashboard(app)
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)
    hosts = HostPolicy(settings.host, settings.allowed_hosts)
    guarded = SecurityHeaders(CrossSiteGuard(AccessGuard(app, auth), hosts))
    return HotPath(
        guarded, gateway, settings.max_body_bytes, hosts, auth, monitor, settings.access_log
    )
