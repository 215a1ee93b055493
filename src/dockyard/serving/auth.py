"""Who a request is and whether it may do what it asks: credentials from the headers, the
principal they name, the permission table, rate limits, and security events for every refusal.

The same ``Authenticator`` serves the hot path (inside its own header scan: a dict lookup, an HMAC
and a comparison, no database) and the ``AccessGuard`` in front of the web framework. Keys live in
memory (``KeyRing``), reloaded from the database every ``REFRESH_S`` by a background task, so a new
or revoked key takes effect within about a second in every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.config import Settings
from dockyard.errors import DockyardError, RateLimited, Unauthenticated
from dockyard.security.apikeys import PREFIX, KeyRecord, KeyRing, key_id_of
from dockyard.security.events import (
    AUTH_FAILED,
    FORBIDDEN,
    RATE_LIMITED,
    EventLog,
    SecurityEvent,
)
from dockyard.security.permissions import PUBLIC, ROUTES
from dockyard.security.principals import OPEN, Action, Principal, require
from dockyard.security.ratelimit import RateLimits, parse_limits
from dockyard.services.workspace import Workspace
from dockyard.serving.failures import send_error

logger = logging.getLogger(__name__)

REFRESH_S = 1.0
FORCED_RELOAD_S = 0.25
AUTHORIZATION = b"authorization"
API_KEY = b"x-api-key"
BEARER = "bearer "
MISSING = (
    "this route needs credentials: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
    "(create keys with: dockyard keys create)"
)


class TokenVerifier(Protocol):
    """Something that turns a bearer token that is not an API key (a JWT) into a principal."""

    def principal(self, token: str) -> Principal: ...


class RateLimiter(Protocol):
    """Per-principal rate limits and request counts (``security.ratelimit.RateLimits``)."""

    def admit(self, principal: Principal) -> None:
        """Count the request; raise RateLimited when ``principal`` is over its rate."""

    def update(self, records: Sequence[KeyRecord]) -> None:
        """Take the keys' own rates, after the keys are reloaded."""

    def roll(self) -> list[SecurityEvent]:
        """Events for principals whose request rate jumped, once a counting window is over."""


def credential(authorization: str | None, api_key: str | None) -> str | None:
    """The token a request presents: ``X-API-Key``, else a ``Bearer`` authorization."""
    if api_key:
        return api_key.strip()
    if authorization and authorization[:7].lower() == BEARER:
        return authorization[7:].strip()
    return None


class Authenticator:
    """Credentials → principal → allowed or refused, for one worker."""

    def __init__(
        self,
        ring: KeyRing | None,
        load_keys: Callable[[], Sequence[KeyRecord]] | None = None,
        tokens: TokenVerifier | None = None,
        limiter: RateLimiter | None = None,
        events: EventLog | None = None,
    ) -> None:
        """``ring`` None: authentication is off (``--no-auth``) and everyone is ``OPEN``."""
        self.ring = ring
        self._load_keys = load_keys
        self._tokens = tokens
        self._limiter = limiter
        self.events = events
        self._forced = -FORCED_RELOAD_S

    @property
    def enabled(self) -> bool:
        return self.ring is not None

    def principal(self, token: str | None) -> Principal:
        """The principal a token names; Unauthenticated when missing or not valid."""
        if self.ring is None:
            return OPEN
        if not token:
            raise Unauthenticated(MISSING)
        if token.startswith(PREFIX) or self._tokens is None:
            return self.ring.authenticate(token)
        return self._tokens.principal(token)

    def authorize(self, token: str | None, action: Action, model: str | None) -> Principal:
        """The principal, once it is known to be allowed ``action`` (on ``model``) and under its
        rate limit."""
        principal = self.principal(token)
        if self.ring is not None:
            require(principal, action, model)
            if self._limiter is not None:
                self._limiter.admit(principal)
        return principal

    def refused(
        self,
        error: DockyardError,
        token: str | None,
        method: str,
        path: str,
        client: str,
    ) -> None:
        """Record a refusal (401, 403, 429) as a security event; never the token itself."""
        if self.events is None or self.ring is None:
            return
        kind = (
            AUTH_FAILED
            if isinstance(error, Unauthenticated)
            else RATE_LIMITED
            if isinstance(error, RateLimited)
            else FORBIDDEN
        )
        principal, key_id = "", ""
        if not isinstance(error, Unauthenticated):
            with contextlib.suppress(DockyardError):
                known = self.principal(token)
                principal, key_id = known.actor, known.key_id
        self.events.record(
            SecurityEvent(
                kind=kind,
                principal=principal,
                key_id=key_id,
                method=method,
                path=path,
                status=error.http_status,
                client=client,
                detail=error.message,
            )
        )

    async def reloaded_for(self, token: str | None) -> bool:
        """After a refusal: whether ``token`` is an API key this worker did not know and now
        does, having reloaded the keys (a key created a moment ago, perhaps through another
        worker). Unknown ids reload at most once per ``FORCED_RELOAD_S``, so made-up keys cannot
        drive the database."""
        if self.ring is None or not token:
            return False
        key_id = key_id_of(token)
        now = time.monotonic()
        if key_id is None or key_id in self.ring or now - self._forced < FORCED_RELOAD_S:
            return False
        self._forced = now
        await self.reload_keys()
        return key_id in self.ring

    async def reload_keys(self) -> None:
        """Reload the keys now (this worker has just changed one: it takes effect here at once,
        and in the other workers within their refresh interval)."""
        if self.ring is not None and self._load_keys is not None:
            records = await asyncio.to_thread(self._load_keys)
            self.ring.load(records)
            if self._limiter is not None:
                self._limiter.update(records)

    async def keep_fresh(self) -> None:
        """Reload the keys, look for request-rate jumps and write queued security events every
        ``REFRESH_S``, until cancelled; a database error is logged and tried again."""
        while True:
            try:
                await self.reload_keys()
                if self._limiter is not None and self.events is not None:
                    for event in self._limiter.roll():
                        self.events.record(event)
                if self.events is not None:
                    await asyncio.to_thread(self.events.flush)
            except DockyardError as exc:
                logger.warning("cannot refresh API keys or write security events: %s", exc)
            await asyncio.sleep(REFRESH_S)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep the keys fresh while the server runs (a lifespan context)."""
        task = asyncio.create_task(self.keep_fresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self.events is not None:
                with contextlib.suppress(DockyardError):
                    await asyncio.to_thread(self.events.flush)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def scope_credential(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    authorization = api_key = None
    for key, value in headers:
        if key == AUTHORIZATION:
            authorization = value.decode("latin-1")
        elif key == API_KEY:
            api_key = value.decode("latin-1")
    return credential(authorization, api_key)


class AccessGuard:
    """Pure ASGI, in front of the web framework: every request but the public routes must
    present valid credentials allowed the route's action (``security.permissions.ROUTES``); the
    principal goes into ``scope["state"]["principal"]`` for the route to act as."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth
        self._routes = [
            (method, compile_path(path)[0], action) for (method, path), action in ROUTES.items()
        ]

    def _route(self, method: str, path: str) -> tuple[bool, Action | None, str | None]:
        """Whether the route is known, its action and the model it names."""
        for route_method, pattern, action in self._routes:
            if route_method == method or (route_method == "GET" and method == "HEAD"):
                match = pattern.match(path)
                if match is not None:
                    return True, action, match.groupdict().get("name")
        return False, None, None

    def _principal(
        self, token: str | None, known: bool, action: Action | None, model: str | None
    ) -> Principal:
        if known and action is not None:
            return self.auth.authorize(token, action, model)
        # Unknown route or method: credentials first, so the 404 says nothing to strangers.
        return self.auth.principal(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        known, action, model = self._route(method, scope["path"])
        if known and action is PUBLIC:
            await self.app(scope, receive, send)
            return
        token = scope_credential(scope["headers"])
        try:
            try:
                principal = self._principal(token, known, action, model)
            except Unauthenticated:
                if not await self.auth.reloaded_for(token):
                    raise
                principal = self._principal(token, known, action, model)
        except DockyardError as exc:
            self.auth.refused(exc, token, method, scope["path"], client_of(scope))
            await send_error(send, exc, close=True)  # the body, if any, is never read
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def authenticator_for(settings: Settings, workspace: Workspace) -> Authenticator:
    """The authenticator ``settings`` ask for: off (``--no-auth``), or the deployment's API keys,
    loaded now and kept fresh, with their rate limits (a malformed ``rate_limits`` entry raises
    InvalidInput naming it) and security events written to the workspace's table; and JWTs
    verified against ``jwt_jwks`` when it is set (its keys fetched now: call this in the worker,
    after any fork, as the verifier runs a refresh thread)."""
    if not settings.auth:
        parse_limits(settings.rate_limits)  # a malformed entry stops the start, --no-auth too
        return Authenticator(None)
    records = workspace.keys.all()
    ring = KeyRing(workspace.hasher)
    ring.load(records)
    limiter = RateLimits.from_settings(settings.rate_limits, records)
    tokens = None
    if settings.jwt_jwks:
        from dockyard.security.tokens import JwtVerifier  # PyJWT only when tokens are on

        tokens = JwtVerifier.from_settings(settings)
    return Authenticator(
        ring, load_keys=workspace.keys.all, tokens=tokens, limiter=limiter, events=workspace.events
    )
