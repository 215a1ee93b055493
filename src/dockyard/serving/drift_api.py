"""``GET /api/models/{name}/drift``: drift of a model's live traffic from its reference profile,
computed on demand over ``?window=`` (default: the ``drift_window`` setting) and stored, as
``dockyard monitor drift`` does (needs ``read_model``).

One computation at a time per worker: each reads up to ``MAX_WINDOW_VALUES`` logged values, so
concurrent callers take turns rather than multiply the memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from dockyard.config import Settings
from dockyard.monitoring.drift import drift_now
from dockyard.registry.refs import ModelRef, check_name
from dockyard.services.workspace import Workspace


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Monitoring"])
    turn = asyncio.Lock()

    @router.get(
        "/models/{name}/drift",
        summary="Drift of live traffic from the reference, per feature and output",
    )
    async def drift(
        request: Request, name: str, window: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """The model's served version (its production alias, else its latest; ``version``: that
        one) against its reference profile: PSI, the KS or chi-square p-value, whether each
        feature and output drifted, and data quality, over the newest logged rows in
        ``window`` (``24h``, ``100000rows``)."""
        workspace: Workspace = request.app.state.workspace
        settings: Settings = request.app.state.settings
        async with turn:
            return await run_in_threadpool(_drift, workspace, settings, name, version, window)

    return router


def _drift(
    workspace: Workspace, settings: Settings, name: str, version: int | None, window: str | None
) -> dict[str, Any]:
    found = workspace.store.resolve(ModelRef(check_name(name), version=version))
    return drift_now(workspace.home, workspace.store, settings, found, window)
