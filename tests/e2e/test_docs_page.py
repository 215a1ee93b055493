"""``/docs`` (Swagger UI) and ``/redoc`` render offline: their pages name only this server's
packaged assets, and in a real headless Chromium against a real server with keys required they
list the operations while every request stays on the server (anything else is aborted, and the
pages' Content-Security-Policy stops ReDoc's vendor logo before it leaves the browser).

Chromium is Debian's (``/usr/bin/chromium``; CI installs it): without it these tests fail, they do
not skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route

from browsers import ASSET_URL, RENDER_TIMEOUT_MS, chromium
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.docs_pages import ASSETS, ASSETS_URL, PAGE_POLICY
from dockyard.serving.gateway import build_local_gateway
from servers import Server

INFER = "/v2/models/{name}/infer"
REGISTER = "/api/models"


@pytest.fixture
async def client(workspace: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, keys off, management on."""
    gateway = build_local_gateway(workspace, [])
    app = create_app(workspace.settings, gateway, Authenticator(None), workspace)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        gateway.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_pages_load_only_packaged_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    urls = ASSET_URL.findall(response.text)
    assert urls, response.text
    assert all(url.startswith(f"{ASSETS_URL}/") for url in urls), urls
    assert "cdn" not in response.text.lower()
    assert "https://" not in response.text
    assert PAGE_POLICY in response.headers.get_list("content-security-policy")
    for url in urls:
        assert (await client.get(url)).status_code == 200, url


async def test_swagger_ui_shows_no_online_validator_badge(client: httpx.AsyncClient) -> None:
    assert '"validatorUrl": null' in (await client.get("/docs")).text


async def test_every_asset_is_served_with_its_type(client: httpx.AsyncClient) -> None:
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for name in ASSETS:
        response = await client.get(f"{ASSETS_URL}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(types[Path(name).suffix]), name
        assert (await client.head(f"{ASSETS_URL}/{name}")).status_code == 200, name


@pytest.mark.parametrize(
    "path",
    ["/docs/assets/nope.js", "/docs/assets/..%2Fcore.py", "/docs/assets/%2e%2e/core.py"],
)
async def test_nothing_else_is_served_from_the_assets(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.json()["error"].startswith("Not Found: GET /docs/assets/")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as opened:
        yield opened


def _render_offline(
    browser: Browser, server: Server, path: str, wait: Callable[[Page], None]
) -> None:
    """Open ``path`` with the admin key and ``wait`` for it to render; fails when a request went
    anywhere but the server, or was even attempted unless the page's policy stopped it in the
    browser."""
    requested: list[str] = []
    blocked_by_policy: list[str] = []
    aborted: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(f"{server.url}/"):
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    def failed(request: Request) -> None:
        if request.failure == "csp":
            blocked_by_policy.append(request.url)

    context = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {server.admin_key}"}
    )
    try:
        context.route("**/*", only_the_server)
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.on("requestfailed", failed)
        page.goto(f"{server.url}{path}")
        wait(page)
        page.wait_for_load_state("networkidle")

        assert aborted == []
        elsewhere = [url for url in requested if not url.startswith(f"{server.url}/")]
        assert sorted(elsewhere) == sorted(blocked_by_policy)
        assert "Unable to render this definition" not in page.content()
    finally:
        context.close()


def _swagger_ui_5_listed(page: Page) -> None:
    for path in (INFER, REGISTER):
        selector = f".opblock .opblock-summary-path[data-path='{path}']"
        page.wait_for_selector(selector, timeout=RENDER_TIMEOUT_MS)
    assert page.evaluate("window.versions.swaggerUI.version").startswith("5.")


def _redoc_listed(page: Page) -> None:
    for title in ("Inference", "Register a model version"):
        page.wait_for_selector(f"h2:text-is('{title}')", timeout=RENDER_TIMEOUT_MS)


@pytest.mark.e2e
def test_the_docs_pages_list_the_operations_offline(
    served: Path, start_server: Callable[..., Server], browser: Browser
) -> None:
    server = start_server(served, auth=True)

    _render_offline(browser, server, "/docs", _swagger_ui_5_listed)
    _render_offline(browser, server, "/redoc", _redoc_listed)
