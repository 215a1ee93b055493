"""The monitoring dashboard: ``/dashboard``, its script and style, and the JSON it draws,
``GET /api/monitoring/overview``.

The page and its two assets are public and hold no data: a browser opening ``/dashboard`` cannot
send a key with the navigation, so the page asks for one (kept in the tab's ``sessionStorage``)
and sends it as a ``Bearer`` header on its one data call, which needs ``read_metrics`` like every
route of the permission table. A server started with ``--no-auth`` answers that call without a key,
so the form is only shown when the call is refused. The page's Content-Security-Policy allows
this origin only, and no inline script or style: everything it runs is ``dashboard.js``, and the
charts are SVG drawn by it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from dockyard.monitoring.metrics import WorkerMetrics
from dockyard.security.principals import Principal
from dockyard.services.workspace import Workspace

PAGE_URL = "/dashboard"
ASSETS_URL = "/dashboard/assets"
STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "dashboard.html"
ASSETS = ("dashboard.js", "dashboard.css")
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Scripts, styles and data from this origin only; nothing inline, no form posts anywhere."""


def _file(path: Path, headers: dict[str, str] | None = None) -> Callable[..., Awaitable[Response]]:
    async def serve(_: Request) -> Response:
        return FileResponse(path, headers=headers)

    return serve


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/monitoring", tags=["Monitoring"])

    @router.get("/overview", summary="What the dashboard shows, over a window such as 24h")
    async def monitoring_overview(request: Request, since: str = "24h") -> Response:
        # pyarrow and the log reader, at the first call: serving does not load them otherwise.
        from dockyard.monitoring.overview import overview

        workspace: Workspace = request.app.state.workspace
        principal: Principal = request.state.principal
        metrics: WorkerMetrics | None = request.app.state.monitor.metrics
        totals = None if metrics is None else await metrics.totals()
        found = await run_in_threadpool(
            overview,
            workspace.home,
            workspace.store,
            workspace.settings,
            since,
            principal.sees,
            totals,
        )
        return Response(orjson.dumps(found), media_type="application/json")

    return router


def add_dashboard(app: FastAPI) -> None:
    """Add the page, its assets (GET and HEAD, out of the schema) and the overview route."""
    app.add_route(
        PAGE_URL, _file(PAGE, {"content-security-policy": PAGE_POLICY}), include_in_schema=False
    )
    for name in ASSETS:
        app.add_route(f"{ASSETS_URL}/{name}", _file(STATIC / name), include_in_schema=False)
    app.include_router(build_router())
