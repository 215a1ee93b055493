"""The API docs pages, ``/docs`` (Swagger UI 5) and ``/redoc`` (ReDoc 2), with their scripts and
styles served from the installed ``fastapi_offline`` package instead of a CDN: they render on a
machine without internet, and opening them tells no third party.

Only the package's static files are used (its ``FastAPIOffline`` would replace our app). Each file
is a route of its own, public (a browser fetches them without the page's credentials; they are the
package's files, nothing of this server), so nothing else can be served from that folder, and the
permission table can name each. The pages carry a Content-Security-Policy allowing this origin
only: ReDoc's menu would otherwise load its vendor's logo from the vendor's CDN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse

ASSETS_URL = "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
STATIC = Path(fastapi_offline.__file__).parent / "static"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
PAGE_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'self'"
)
"""Swagger UI and ReDoc start from an inline script, and ReDoc searches in a ``blob:`` worker."""


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["content-security-policy"] = PAGE_POLICY
    return response


def _asset(path: Path) -> Callable[[Request], Awaitable[FileResponse]]:
    async def serve(_: Request) -> FileResponse:
        return FileResponse(path)

    return serve


def add_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and the assets under ``ASSETS_URL`` to
    ``app``, made with ``docs_url=None, redoc_url=None``; like FastAPI's own, each answers GET and
    HEAD and is left out of the schema."""
    openapi_url = app.openapi_url
    assert openapi_url is not None, "the docs pages show the app's OpenAPI schema"
    favicon = f"{ASSETS_URL}/favicon.png"

    async def swagger_ui(_: Request) -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=favicon,
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
                # No badge image from the online validator (shown when not on localhost).
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    async def swagger_ui_redirect(_: Request) -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    async def redoc(_: Request) -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    for name in ASSETS:
        app.add_route(f"{ASSETS_URL}/{name}", _asset(STATIC / name), include_in_schema=False)
