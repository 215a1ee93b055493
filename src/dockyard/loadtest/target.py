"""The server under test: its address, the model's paths, and what is asked of it before the load
starts (V2 metadata, Dockyard's reference profile when the server has one, one trial request).

These few requests go through httpx; the load itself goes through the raw connections of
``connections.py``. HTTP failures are translated here, once, into Dockyard errors, so a wrong key,
an unknown model or a server that is not there is one line and its exit code.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from dockyard.errors import (
    DockyardError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)

DISCOVERY_TIMEOUT_S = 10.0
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A model on a V2 server: ``url`` is the server's base (scheme, host, port, optional path
    prefix), ``version`` None the server's default version of ``model``."""

    url: str
    model: str
    version: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise InvalidInput(f"URL {self.url!r} must look like http://127.0.0.1:8000")
        try:
            parts.port  # noqa: B018 - a malformed port raises here
        except ValueError as exc:
            raise InvalidInput(f"URL {self.url!r} has a malformed port") from exc

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def authority(self) -> str:
        """The ``Host`` header's value."""
        return urlsplit(self.url).netloc

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if urlsplit(self.url).scheme == "https" else None

    def path(self, suffix: str) -> str:
        return urlsplit(self.url).path.rstrip("/") + suffix

    def model_path(self) -> str:
        """``/v2/models/{m}`` or ``/v2/models/{m}/versions/{v}``."""
        path = f"/v2/models/{quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{quote(self.version, safe='')}"
        return self.path(path)

    def infer_path(self) -> str:
        return f"{self.model_path()}/infer"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def describe(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        return f"model {self.model!r}{version} at {self.url}"


@contextmanager
def _reaching(target: Target) -> Iterator[None]:
    """httpx's failures to connect or answer as Unavailable naming the URL."""
    try:
        yield
    except httpx.TransportError as exc:
        raise Unavailable(
            f"cannot reach {target.url}: {type(exc).__name__}: {exc or 'no answer'}; "
            "is the server running at that address?"
        ) from exc


def refusal(target: Target, response: httpx.Response, what: str) -> DockyardError:
    """The Dockyard error for an HTTP error answer to ``what``, with the server's message."""
    try:
        detail = response.json().get("error") or response.text
    except (ValueError, AttributeError):
        detail = response.text
    detail = str(detail).strip()[:300]
    status = response.status_code
    message = f"{what} answered {status}: {detail}"
    if status == 401:
        return Unauthenticated(f"{message} (give --key or set DOCKYARD_API_KEY)")
    if status == 403:
        return Forbidden(f"{message} (the key may not use {target.describe()})")
    if status == 404:
        return NotFound(f"{message} (is {target.describe()} served?)")
    if 400 <= status < 500:
        return InvalidInput(f"{message} (check the request body, --input or --rows)")
    return Unavailable(message)


def fetch_metadata(target: Target) -> dict[str, Any]:
    """The model's V2 metadata (``GET /v2/models/{m}``): its inputs, datatypes and shapes."""
    with _reaching(target), _client(target) as client:
        response = client.get(target.model_path())
    if response.status_code != 200:
        raise refusal(target, response, f"GET {target.model_path()}")
    metadata: dict[str, Any] = response.json()
    return metadata


def fetch_profile(target: Target, metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The reference profile of the version the server serves, from Dockyard's management API
    (``GET /api/models/{m}/versions/{v}``, which needs a key that may read the model); None when
    the server is not Dockyard, the key may not read it, or the version has no profile."""
    version = target.version
    if version is None:
        served = [str(v) for v in metadata.get("versions") or []]
        if not served:
            return None
        version = served[-1]
    path = target.path(f"/api/models/{quote(target.model, safe='')}/versions/{quote(version)}")
    try:
        with _client(target) as client:
            response = client.get(path)
        if response.status_code != 200:
            return None
        profile = response.json().get("profile")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return profile if isinstance(profile, dict) else None


def try_once(target: Target, body: bytes) -> None:
    """Send one request before the load starts: a body the model refuses or a key it does not
    take is one clear error now, not a stage of identical failures."""
    with _reaching(target), _client(target) as client:
        response = client.post(
            target.infer_path(), content=body, headers={"Content-Type": "application/json"}
        )
    if response.status_code != 200:
        raise refusal(target, response, f"POST {target.infer_path()}")
    try:
        json.loads(response.content)
    except ValueError as exc:
        raise Unavailable(f"POST {target.infer_path()} answered 200 but not JSON") from exc


def _client(target: Target) -> httpx.Client:
    base = urlsplit(target.url)
    return httpx.Client(
        base_url=f"{base.scheme}://{base.netloc}",
        headers=target.headers(),
        timeout=DISCOVERY_TIMEOUT_S,
        trust_env=False,
    )
