"""Refusing requests another site makes through the operator's browser: a ``Host`` the server does
not answer to (DNS rebinding) anywhere, and a foreign ``Origin`` on a state-changing request.

The hot path checks ``Host`` inside its own header scan with the same ``HostPolicy``;
``CrossSiteGuard`` checks everything that goes on to the web framework.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.errors import Forbidden
from dockyard.serving.failures import send_error

HOST = b"host"
ORIGIN = b"origin"
FETCH_SITE = b"sec-fetch-site"
FETCH_SITES_OWN = frozenset({b"same-origin", b"none"})
"""``Sec-Fetch-Site`` values a browser sends for the server's own pages and for typed URLs."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WEB_SCHEMES = frozenset({b"http", b"https"})
ALWAYS_ALLOWED = ("localhost",)
HOSTS_REMEMBERED = 256
"""Distinct allowed ``Host`` values kept for a set lookup (clients choose them: bounded)."""


class HostPolicy:
    """Which ``Host`` header values this server answers to.

    Allowed: any IP literal (DNS rebinding needs a name), ``localhost``, the bound host and the
    ``allowed_hosts`` setting (exact names, ``*.domain`` for subdomains, ``*`` for any), each with
    or without a port. A value is parsed once; allowed ones are remembered as raw bytes, so the
    usual request costs one set lookup.
    """

    def __init__(self, bound_host: str, allowed_hosts: Sequence[str]) -> None:
        patterns = [pattern.strip().lower() for pattern in allowed_hosts if pattern.strip()]
        self.allows_any = "*" in patterns
        self._names = frozenset(
            name for name in (*ALWAYS_ALLOWED, bound_host.lower(), *patterns) if "*" not in name
        )
        self._suffixes = tuple(p[1:] for p in patterns if p.startswith("*.") and len(p) > 2)
        self.known: set[bytes] = set()
        """Raw ``Host`` values already allowed; the hot path looks here before calling allows."""

    def refusal(self, headers: Sequence[tuple[bytes, bytes]]) -> Forbidden | None:
        """Forbidden for a ``Host`` header that does not name this server; None when it does or
        when there is none."""
        if not self.allows_any:
            for key, value in headers:
                if key == HOST and not self.allows(value):
                    return refused_host(value)
        return None

    def allows(self, value: bytes) -> bool:
        """Whether a raw ``Host`` header value names this server."""
        if self.allows_any or value in self.known:
            return True
        if not self._decide(value):
            return False
        if len(self.known) < HOSTS_REMEMBERED:
            self.known.add(value)
        return True

    def _decide(self, value: bytes) -> bool:
        text = value.decode("latin-1").strip().lower()
        if text.startswith("["):
            literal, bracket, port = text[1:].partition("]")
            return bool(bracket) and _is_port(port) and _is_ip(literal)
        name, colon, port = text.partition(":")
        if colon and not _is_port(colon + port):
            return False
        return bool(name) and (_is_ip(name) or name in self._names or name.endswith(self._suffixes))


def _is_port(text: str) -> bool:
    """Empty, or ``:`` and digits (the port part of a ``Host`` value)."""
    return not text or (text[0] == ":" and text[1:].isdigit())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def refused_host(value: bytes) -> Forbidden:
    shown = value.decode("latin-1")
    return Forbidden(
        f"Host header {shown!r} does not name this server; if it does, add the name to the "
        "allowed_hosts setting (DOCKYARD_ALLOWED_HOSTS, --allowed-hosts)"
    )


def cross_site_refusal(headers: Sequence[tuple[bytes, bytes]]) -> Forbidden | None:
    """Why a state-changing request is refused: an ``Origin`` other than the server's own (the
    ``Host`` it was sent to), or without ``Origin``, a ``Sec-Fetch-Site`` from another site.
    Clients that are not browsers (curl, the CLI, ``dockyard.Client``) send neither."""
    host = origin = site = None
    for key, value in headers:
        if key == HOST:
            host = value
        elif key == ORIGIN:
            origin = value
        elif key == FETCH_SITE:
            site = value
    if origin is not None:
        scheme, separator, netloc = origin.partition(b"://")
        if not (
            separator
            and scheme.lower() in WEB_SCHEMES
            and host is not None
            and netloc.lower() == host.strip().lower()
        ):
            return Forbidden(
                f"Origin header {origin.decode('latin-1')!r} is not this server's own; requests "
                "that change state are refused from other sites (use the CLI, curl or "
                "dockyard.Client, which send no Origin)"
            )
    elif site is not None and site.lower() not in FETCH_SITES_OWN:
        return Forbidden(
            f"Sec-Fetch-Site header {site.decode('latin-1')!r}: requests that change state are "
            "refused from other sites"
        )
    return None


class CrossSiteGuard:
    """Pure ASGI: refuses (403) a foreign ``Host`` on any request and a cross-site request with
    any method but GET, HEAD and OPTIONS, before the app reads anything."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await send_error(send, refusal, close=True)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Forbidden | None:
        headers = scope["headers"]
        refusal = self.hosts.refusal(headers)
        if refusal is not None or scope.get("method", "GET") in SAFE_METHODS:
            return refusal
        return cross_site_refusal(headers)
