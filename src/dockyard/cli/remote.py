"""Registry commands against a remote server: the ``--url`` option (or ``DOCKYARD_URL``) and the
``Client`` it opens with ``DOCKYARD_API_KEY``, as MLflow users point a tracking URI at a server.

Without ``--url`` the commands act on a local home as the operating-system user; with it they go
through the server's management API as the key's principal, checked by the same permission table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dockyard.errors import InvalidInput, NotFound, Unauthenticated

if TYPE_CHECKING:
    from dockyard.client import Client

URL_ENV = "DOCKYARD_URL"
API_KEY_ENV = "DOCKYARD_API_KEY"
"""``dockyard.client.API_KEY_ENV``, spelled here so that the ``--url`` help text does not import
the client (httpx, numpy) into every command; a test checks the two agree."""

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=URL_ENV,
        help=f"Act on this Dockyard server through its API, with the key in ${API_KEY_ENV} "
        f"(default: ${URL_ENV}; unset: act on the local home).",
        show_default=False,
    ),
]


def remote_client(url: str, home: Path | None = None) -> Client:
    """A client of the server at ``url`` with the key in ``DOCKYARD_API_KEY``.

    Raises Unauthenticated (exit code 3) when no key is set, rather than sending a request that
    can only be refused, and InvalidInput when ``--home`` is given too (which one is meant?).
    """
    if home is not None:
        raise InvalidInput(
            f"give --home (act on a local home) or --url / ${URL_ENV} (act on a server), not both"
        )
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise Unauthenticated(f"set {API_KEY_ENV} to use --url")
    from dockyard.client import Client

    return Client(url, api_key=key)


def resolve(client: Client, ref: str) -> dict[str, Any]:
    """The version ``NAME``, ``NAME@ALIAS`` or ``NAME:VERSION`` names on the server, as the local
    registry resolves it: a bare name is its production alias, else its latest live version."""
    from dockyard.registry.refs import DEFAULT_ALIAS, parse_ref

    parsed = parse_ref(ref)
    if parsed.version is not None:
        return client.get_version(parsed.name, parsed.version)
    model = client.get_model(parsed.name)
    aliases: dict[str, int] = model.get("aliases") or {}
    if parsed.alias is not None:
        if parsed.alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise NotFound(
                f"model {parsed.name!r} has no alias {parsed.alias!r} (aliases: {known})"
            )
        return client.get_version(parsed.name, aliases[parsed.alias])
    if DEFAULT_ALIAS in aliases:
        return client.get_version(parsed.name, aliases[DEFAULT_ALIAS])
    live = [v["version"] for v in model.get("versions") or [] if not v.get("archived")]
    if not live:
        raise NotFound(
            f"model {parsed.name!r} has no version to serve: no {DEFAULT_ALIAS!r} alias and no "
            f"version that is not archived; name a version explicitly (e.g. {parsed.name}:1)"
        )
    return client.get_version(parsed.name, max(live))
