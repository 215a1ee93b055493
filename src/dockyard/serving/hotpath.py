"""The pure ASGI front of the app: inference and health answered without the web framework.

``POST …/infer``, ``POST /v1/models/{m}:predict`` and the health probes are matched by plain string
operations and answered here; every other request (metadata, management, docs) goes on to the
FastAPI app. The FastAPI routes for the same paths exist for the OpenAPI docs and call the same
coroutines in ``serving.inference``. The ``Host`` check (``serving.guards``) is folded into the
header scan each hot request makes anyway. With traces on, each inference request runs inside
its span (``_traced``); with them off, ``_predict`` is called directly, chosen once.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from time import perf_counter

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.errors import DockyardError, NotReady, Unauthenticated
from dockyard.monitoring.monitor import Monitor
from dockyard.reliability.logs import REQUEST_ID as CURRENT_REQUEST_ID
from dockyard.reliability.logs import access
from dockyard.security.principals import OPEN, Action, Principal
from dockyard.serving.auth import Authenticator, client_of, credential
from dockyard.serving.bodies import receive_body
from dockyard.serving.failures import error_answer, send_error
from dockyard.serving.gateway import Gateway
from dockyard.serving.guards import HOST, HostPolicy, refused_host
from dockyard.serving.headers import SECURITY_HEADERS
from dockyard.serving.inference import BINARY, JSON, Answer, infer_v2, predict_v1
from dockyard.serving.protocol import HEADER_LENGTH
from dockyard.serving.rollout_routing import failed_version

V2_PREFIX = "/v2/models/"
V2_SUFFIX = "/infer"
VERSION_SEGMENT = "/versions/"
V1_PREFIX = "/v1/models/"
V1_SUFFIX = ":predict"
REQUEST_ID = b"x-request-id"
HOST_NAME = HOST.decode()
HEADERS_READ = {
    name.encode(): name
    for name in (
        "content-length",
        "content-encoding",
        HEADER_LENGTH.lower(),
        HOST_NAME,
        "authorization",
        "x-api-key",
    )
}
"""The request headers the inference endpoints read, raw name to name; only these are decoded.
The request id is kept as the raw bytes it is echoed back as, and so is ``Host``, which is
checked against the set of values already allowed. The credentials are read here too."""
TARGETS_CACHED = 1024
"""At most this many distinct inference paths keep their parsed target (the paths are the
client's to choose, so the cache is bounded)."""
LIVE = b'{"live":true}'
READY = b'{"ready":true}'
Serve = Callable[
    [Scope, Receive, Send, tuple[str, str | None] | None, str | None],
    Awaitable[Answer | Exception],
]
CONTENT_TYPES = {
    content_type: (b"content-type", content_type.encode()) for content_type in (JSON, BINARY)
}
"""Response ``content-type`` headers, encoded once."""


def _v2_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` for a V2 inference path, else None."""
    if not (path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX)):
        return None
    middle = path[len(V2_PREFIX) : -len(V2_SUFFIX)]
    name, found, version = middle.partition(VERSION_SEGMENT)
    if not name or "/" in name or (found and (not version or "/" in version)):
        return None
    return name, (version if found else None)


def _v1_target(path: str) -> str | None:
    if not (path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX)):
        return None
    name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
    return name if name and "/" not in name else None


class HotPath:
    """Answers the hot endpoints itself; passes everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        max_body_bytes: int,
        hosts: HostPolicy,
        auth: Authenticator,
        monitor: Monitor | None = None,
        access_log: bool = False,
    ) -> None:
        """``monitor`` is told of every inference request once it is answered (and traces it,
        when its traces are on); with ``access_log``, each one is logged
        (``reliability.logs.access``) once answered."""
        self.app = app
        self.auth = auth
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.hosts = hosts
        self._checks_host = not hosts.allows_any
        self._hosts_known = hosts.known
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}-".encode()
        self._v2_targets: dict[str, tuple[str, str | None]] = {}
        """Parsed V2 paths: one dict lookup instead of five string operations per request."""
        self._logs = monitor is not None and monitor.log is not None
        """Whether the prediction log is on: only then are the request id, the principal and
        the tensors handed to the monitor."""
        measures = monitor is not None and monitor.metrics is not None
        self._monitor = monitor if measures or self._logs else None
        self._access = access_log
        self._traces = monitor.traces if monitor is not None else None
        self._serve: Serve = self._predict if self._traces is None else self._traced
        """How an inference request is served: chosen here, so that with traces off the hot
        path does not even test for them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        if method == "POST":
            v2 = self._v2_targets.get(path)
            if v2 is None:
                v2 = _v2_target(path)
                if v2 is not None and len(self._v2_targets) < TARGETS_CACHED:
                    self._v2_targets[path] = v2
            v1 = None if v2 else _v1_target(path)
            if v2 is not None or v1 is not None:
                await self._serve(scope, receive, send, v2, v1)
                return
        elif method == "GET" and path == "/v2/health/live":
            if await self._host_allowed(scope, send):
                await _respond(send, 200, JSON, LIVE)
            return
        elif method == "GET" and path == "/v2/health/ready":
            if await self._host_allowed(scope, send):
                await self._ready(send)
            return
        await self.app(scope, receive, send)

    async def _host_allowed(self, scope: Scope, send: Send) -> bool:
        """Whether the ``Host`` header (if any) names this server; answers 403 when not."""
        refusal = self.hosts.refusal(scope["headers"])
        if refusal is not None:
            await send_error(send, refusal, close=True)
            return False
        return True

    async def _ready(self, send: Send) -> None:
        if self.gateway.is_ready():
            await _respond(send, 200, JSON, READY)
            return
        status, headers, body = error_answer(NotReady("no model is loaded yet"), "-")
        await _respond(send, status, JSON, body, headers)

    async def _predict(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        v2: tuple[str, str | None] | None,
        v1: str | None,
    ) -> Answer | Exception:
        """Answer an inference request; returns the answer sent, or the error answered."""
        started = perf_counter()
        headers: dict[str, str] = {}
        request_id = b""
        host = None
        for key, value in scope["headers"]:
            name = HEADERS_READ.get(key)
            if name is HOST_NAME:
                host = value
            elif name is not None:
                headers[name] = value.decode("latin-1")
            elif key == REQUEST_ID:
                request_id = value
        if (
            host is not None
            and self._checks_host
            and host not in self._hosts_known
            and not self.hosts.allows(host)
        ):
            refusal = refused_host(host)
            await send_error(send, refusal, close=True)
            self._failed(scope, v2, v1, refusal.http_status, started, refusal, OPEN)
            return refusal
        if not request_id:
            request_id = b"%s%x" % (self._id_prefix, next(self._ids))
        CURRENT_REQUEST_ID.set(request_id)
        principal = OPEN
        if self.auth.enabled:
            token = credential(headers.get("authorization"), headers.get("x-api-key"))
            model = v2[0] if v2 is not None else v1
            try:
                try:
                    principal = self.auth.authorize(token, Action.INFER, model)
                except Unauthenticated:
                    if not await self.auth.reloaded_for(token):
                        raise
                    principal = self.auth.authorize(token, Action.INFER, model)
            except DockyardError as exc:
                self.auth.refused(exc, token, "POST", scope["path"], client_of(scope))
                status, extra, body = error_answer(exc, request_id.decode("latin-1"))
                # The body is never read: close rather than let a refused client stream it.
                extra["Connection"] = "close"
                await _respond(send, status, JSON, body, extra, request_id)
                self._failed(scope, v2, v1, status, started, exc, principal)
                return exc
        read = partial(receive_body, headers, receive, self.max_body_bytes)
        try:
            if v2 is not None:
                answer: Answer = await infer_v2(self.gateway, v2[0], v2[1], headers, read)
            else:
                assert v1 is not None
                answer = await predict_v1(self.gateway, v1, read)
        except Exception as exc:
            status, extra, body = error_answer(exc, request_id.decode("latin-1"))
            await _respond(send, status, JSON, body, extra, request_id)
            self._failed(scope, v2, v1, status, started, exc, principal)
            return exc
        await _respond(send, 200, answer.content_type, answer.body, answer.headers, request_id)
        if self._monitor is not None:
            self._answered(v2, v1, answer, started, request_id, principal)
        if self._access:
            _access(scope, 200, started, principal)
        return answer

    async def _traced(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        v2: tuple[str, str | None] | None,
        v1: str | None,
    ) -> Answer | Exception:
        """``_predict`` inside the request's span (traces on): the span is current while the
        request is served, and ends with what was answered."""
        traces = self._traces
        assert traces is not None
        route, name, number = ("v2", *v2) if v2 is not None else ("v1", v1 or "", None)
        span, token = traces.request(scope["headers"], route, name)
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        outcome: Answer | BaseException
        try:
            outcome = await self._predict(scope, receive, send_traced, v2, v1)
        except BaseException as exc:  # a client gone while its answer was sent, a cancellation
            outcome = exc
            raise
        finally:
            if isinstance(outcome, Answer):
                version, rows, error = outcome.version, _rows(outcome.inputs), None
            else:
                version, rows = failed_version(self.gateway, name, number), None
                error = type(outcome).__name__
            request_id = CURRENT_REQUEST_ID.get()
            if isinstance(request_id, bytes):
                request_id = request_id.decode("latin-1")
            number_served = None if version is None else version.version
            traces.answered(span, token, status, number_served, rows, request_id, error)
        return outcome

    def _answered(
        self,
        v2: tuple[str, str | None] | None,
        v1: str | None,
        answer: Answer,
        started: float,
        request_id: bytes,
        principal: Principal,
    ) -> None:
        """Tell the monitor of a request answered with predictions (the request id, the
        principal and the tensors only when they are logged)."""
        assert self._monitor is not None
        route, name = ("v2", v2[0]) if v2 is not None else ("v1", v1 or "")
        seconds = perf_counter() - started
        if self._logs:
            self._monitor.observe(
                route,
                name,
                answer.version,
                200,
                seconds,
                None,
                request_id.decode("latin-1"),
                principal.actor,
                answer.inputs,
                answer.outputs,
            )
        else:
            version = answer.version
            self._monitor.observe(route, name, version, 200, seconds, None, "", "", None, None)

    def _failed(
        self,
        scope: Scope,
        v2: tuple[str, str | None] | None,
        v1: str | None,
        status: int,
        started: float,
        error: Exception,
        principal: Principal,
    ) -> None:
        """Write the access record of a request answered with an error (when the access log is
        on) and tell the monitor of it, under the version that would have answered it (none for
        a model or version not served here)."""
        if self._access:
            _access(scope, status, started, principal)
        if self._monitor is None:
            return
        route, name, number = ("v2", *v2) if v2 is not None else ("v1", v1 or "", None)
        version = failed_version(self.gateway, name, number)
        seconds = perf_counter() - started
        kind = type(error).__name__
        self._monitor.observe(route, name, version, status, seconds, kind, "", "", None, None)


def _rows(inputs: Mapping[str, np.ndarray] | None) -> int | None:
    """The rows of a request's decoded tensors (their first dimension)."""
    for array in (inputs or {}).values():
        return int(array.shape[0]) if array.ndim else 1
    return None


def _access(scope: Scope, status: int, started: float, principal: Principal) -> None:
    """The access record of an inference request (its id is in the context)."""
    seconds = perf_counter() - started
    access(scope["method"], scope["path"], status, seconds, client_of(scope), principal.actor)


async def _respond(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    request_id: bytes | None = None,
) -> None:
    """Send a response: content type and length, ``headers``, the request id if given, then the
    security headers."""
    raw = [
        CONTENT_TYPES.get(content_type) or (b"content-type", content_type.encode()),
        (b"content-length", b"%d" % len(body)),
    ]
    if headers:
        for key, value in headers.items():
            raw.append((key.lower().encode("latin-1"), value.encode("latin-1")))
    if request_id is not None:
        raw.append((REQUEST_ID, request_id))
    raw.extend(SECURITY_HEADERS)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
