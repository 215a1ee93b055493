"""Every route × every caller against one real server with keys required, driven by the one
permission table (``security.permissions.ROUTES``): no key or a bad, expired or revoked key → 401
(public routes: 200), a role without the route's action → 403, a key scoped to another model →
403 on that model's routes, an allowed caller → anything but 401/403 (and never a 5xx).

And the table matches the app: every route the app declares has an entry, and every entry a
route, so a new route cannot ship without a permission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import numpy as np
import pytest
import skops.io
from fastapi import FastAPI
from sklearn.linear_model import LogisticRegression

from dockyard.security.permissions import PUBLIC, ROUTES
from dockyard.security.principals import ROLE_ACTIONS, Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.gateway import build_local_gateway
from homes import open_unprotected
from servers import Server

pytestmark = pytest.mark.e2e

FEATURES = 30
ROW = [0.25] * FEATURES
BAD_KEY = "dk_000000000000_not-a-real-secret"
CALLERS = [
    "no key",
    "bad key",
    *(role.value for role in Role),
    "scoped predictor",
    "expired",
    "revoked",
]
"""Who calls: no credentials, a well-formed unknown key, one key per role, a predictor scoped to
another model, an expired and a revoked deployer key."""
NOT_AUTHENTICATED = {"no key", "bad key", "expired", "revoked"}
PATH_PARAMS = {
    "name": "lr",
    "model_version": "1",
    "version": "1",
    "alias": "staging",
    "promotion_id": "1",
}
"""``promotion_id`` 1 is never created (``lr`` lacks the card the default policy's gate asks
for): an allowed caller's decision is a 404, and ``production`` stays on ``lr:1``."""


@dataclass
class Matrix:
    server: Server
    keys: dict[str, str]
    """Caller → key (absent: no key)."""
    throwaway: dict[str, str]
    """Route template → the id of a key that route may revoke or rotate."""
    model_file: Path


@pytest.fixture(scope="module")
def matrix(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Matrix]:
    """A home with ``lr`` version 1 (alias production), one key per caller, two throwaway keys,
    and a server requiring keys on it."""
    root = tmp_path_factory.mktemp("matrix")
    home = root / "home"
    workspace = open_unprotected(home)
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="production"),
    )
    store, admin = workspace.keys, local_user()
    keys = {"bad key": BAD_KEY}
    for role in Role:
        if role is not Role.ADMIN:  # the server creates the first admin key when none exists
            keys[role.value] = store.create(admin, f"matrix-{role.value}", role)[1]
    keys["scoped predictor"] = store.create(admin, "scoped", Role.PREDICTOR, ["other"])[1]
    past = timedelta(seconds=-60)
    keys["expired"] = store.create(admin, "expired", Role.DEPLOYER, None, past)[1]
    revoked, keys["revoked"] = store.create(admin, "revoked", Role.DEPLOYER)
    store.revoke(admin, revoked.key_id)
    throwaway = {
        "/api/keys/{key_id}": store.create(admin, "to-revoke", Role.PREDICTOR)[0].key_id,
        "/api/keys/{key_id}/rotate": store.create(admin, "to-rotate", Role.PREDICTOR)[0].key_id,
    }
    workspace.store.engine.dispose()
    model_file = root / "model.skops"
    skops.io.dump(logistic, model_file)
    server = Server(home, [], root / "server.log", auth=True)
    try:
        keys[Role.ADMIN.value] = server.admin_key
        yield Matrix(server, keys, throwaway, model_file)
    finally:
        server.stop()


def _request(matrix: Matrix, method: str, template: str, caller: str) -> tuple[str, dict[str, Any]]:
    """The path with its parameters filled in, and a sensible minimal request for the route: each
    allowed state-changing call leaves the later cases a server they expect (lr:1 under
    production, the keys of every caller)."""
    params = {**PATH_PARAMS, "key_id": matrix.throwaway.get(template, "000000000000")}
    path = template.format(**params)
    kwargs: dict[str, Any] = {}
    if template.endswith("/infer"):
        kwargs["json"] = {
            "inputs": [{"name": "x", "shape": [1, FEATURES], "datatype": "FP64", "data": ROW}]
        }
    elif template.endswith(":predict"):
        kwargs["json"] = {"instances": [ROW]}
    elif (method, template) == ("POST", "/api/models"):
        # A throwaway model per caller: lr keeps its one version.
        name = f"scratch-{caller.replace(' ', '-')}"
        kwargs["data"] = {"name": name}
        kwargs["files"] = {"model": ("model.skops", matrix.model_file.read_bytes())}
    elif (method, template) == ("POST", "/api/models/{name}/promotions"):
        kwargs["json"] = {"version": 1, "alias": "production", "comment": f"by {caller}"}
    elif template.startswith("/api/promotions/"):
        kwargs["json"] = {"comment": f"decided by {caller}"}
    elif method == "PATCH":
        kwargs["json"] = {"description": f"touched by {caller}"}
    elif method == "PUT":
        kwargs["json"] = {"version": 1}
    elif (method, template) == ("POST", "/api/keys"):
        kwargs["json"] = {"name": "made-by-matrix", "role": "predictor", "expires": "1h"}
    return path, kwargs


def _expected(action: Any, template: str, caller: str) -> int | None:
    """The status the table says ``caller`` gets; None: allowed (anything but 401 and 403)."""
    if action is PUBLIC:
        return 200
    if caller in NOT_AUTHENTICATED:
        return 401
    role = Role.PREDICTOR if caller == "scoped predictor" else Role(caller)
    if action not in ROLE_ACTIONS[role]:
        return 403
    if caller == "scoped predictor" and "{name}" in template:
        return 403
    return None


CASES = [
    pytest.param(method, template, caller, id=f"{method} {template} as {caller}")
    for (method, template) in ROUTES
    for caller in CALLERS
]


@pytest.mark.parametrize(("method", "template", "caller"), CASES)
def test_route_answers_as_the_table_says(
    matrix: Matrix, method: str, template: str, caller: str
) -> None:
    path, kwargs = _request(matrix, method, template, caller)
    key = matrix.keys.get(caller)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(
        method, f"{matrix.server.url}{path}", headers=headers, timeout=60, **kwargs
    )
    expected = _expected(ROUTES[(method, template)], template, caller)
    shown = f"{method} {path} as {caller}: {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, shown
    if expected is None:
        assert response.status_code not in (401, 403), shown
    else:
        assert response.status_code == expected, shown
    if expected in (401, 403):
        assert "error" in response.json(), shown
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Bearer"), shown


def test_x_api_key_header_works_like_bearer(matrix: Matrix) -> None:
    url = matrix.server.url
    assert httpx.get(f"{url}/api/keys", headers={"X-API-Key": matrix.keys["auditor"]}).is_success
    refused = httpx.get(f"{url}/api/keys", headers={"X-API-Key": matrix.keys["predictor"]})
    assert refused.status_code == 403


def test_a_scoped_key_sees_only_its_models(matrix: Matrix) -> None:
    url = matrix.server.url
    scoped = {"Authorization": f"Bearer {matrix.keys['scoped predictor']}"}
    assert httpx.get(f"{url}/api/models", headers=scoped).json() == []
    every = {"Authorization": f"Bearer {matrix.keys['predictor']}"}
    assert "lr" in [model["name"] for model in httpx.get(f"{url}/api/models", headers=every).json()]


def test_a_key_revoked_while_serving_is_refused_within_seconds(matrix: Matrix) -> None:
    url = matrix.server.url
    admin = {"Authorization": f"Bearer {matrix.keys['admin']}"}
    created = httpx.post(f"{url}/api/keys", headers=admin, json={"name": "short", "role": "admin"})
    assert created.status_code == 201, created.text
    mine = {"Authorization": f"Bearer {created.json()['key']}"}
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/v2", headers=mine).status_code == 401:  # the ring reloads every 1 s
        assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
        time.sleep(0.1)
    revoked = httpx.delete(f"{url}/api/keys/{created.json()['key_id']}", headers=admin)
    assert revoked.json()["state"] == "revoked"
    # Every worker (one per core) refuses it within its own refresh: the access guard and the
    # hot path alike, each polled, since two requests may reach two workers.
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/v2", headers=mine).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still worked after 5 s"
        time.sleep(0.1)
    infer = f"{url}/v2/models/lr/infer"
    while httpx.post(infer, headers=mine, json={"inputs": []}).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key could still infer after 5 s"
        time.sleep(0.1)


def _fastapi_of(app: Any) -> FastAPI:
    """The FastAPI app inside the ASGI layers ``create_app`` wraps it in."""
    while not isinstance(app, FastAPI):
        app = app.app
    return app


def _declared(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers; HEAD is answered as GET, by the guard too.

    FastAPI ≥ 0.16x keeps included routers lazily (``iter_route_contexts`` flattens them); older
    versions list the routes themselves.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(flatten(app.routes)) if flatten is not None else app.routes
    declared = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        assert path, f"a route without a path: {route!r}"
        assert methods, f"a route without methods: {route!r}"
        declared |= {(method, path) for method in methods if method != "HEAD"}
    return declared


def test_every_route_of_the_app_is_in_the_table_and_nothing_else(workspace: Workspace) -> None:
    gateway = build_local_gateway(workspace, [])
    try:
        app = _fastapi_of(create_app(workspace.settings, gateway, Authenticator(None), workspace))
    finally:
        gateway.close()
    declared = _declared(app)
    assert ("GET", "/docs/oauth2-redirect") in declared
    assert declared - set(ROUTES) == set(), "routes without a permission in ROUTES"
    assert set(ROUTES) - declared == set(), "stale ROUTES entries: no such route"
