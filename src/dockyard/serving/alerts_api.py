"""``GET /api/alerts``: the alerts the server's monitoring raised (needs ``read_metrics``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from dockyard.errors import InvalidInput
from dockyard.monitoring.alerts import list_alerts
from dockyard.services.workspace import Workspace

STATES = ("open", "all")


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Monitoring"])

    @router.get("/alerts", summary="Alerts, newest first: the open ones, or all")
    async def alerts(request: Request, state: str = "open", limit: int = 1000) -> list[Any]:
        if state not in STATES:
            raise InvalidInput(f"state must be open or all, got {state!r}")
        workspace: Workspace = request.app.state.workspace
        found = await run_in_threadpool(
            list_alerts, workspace.store.engine, everything=state == "all", limit=limit
        )
        return [alert.to_dict() for alert in found]

    return router
