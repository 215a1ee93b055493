"""Reading request bodies safely: a size cap checked while streaming, and capped decompression.

Framework-free: it takes the request's headers and the ASGI ``receive`` callable, so the pure ASGI
hot path and the FastAPI routes (``request.receive``) share it.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dockyard.errors import InvalidInput, PayloadTooLarge

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
BODY_SETTING = "max_body_bytes"


def _too_large(size: str | int, limit: int, setting: str = BODY_SETTING) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is {size} bytes; the limit is {limit} bytes (setting {setting})"
    )


BodyReader = Callable[[], Awaitable[bytes]]
"""Reads the current request's body (``receive_body`` with its arguments bound)."""
Receive = Callable[[], Awaitable[Any]]


def check_length(declared: str | None, limit: int, setting: str = BODY_SETTING) -> None:
    """PayloadTooLarge when a ``Content-Length`` value says the body is over ``limit``: refused
    before a byte of it is read."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(declared, limit, setting)


def capped(receive: Receive, limit: int, setting: str = BODY_SETTING) -> Receive:
    """``receive`` that raises PayloadTooLarge as soon as the body read so far passes ``limit``,
    for readers that stream a body themselves (a multipart parser spooling files)."""
    size = 0

    async def receive_capped() -> Any:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise _too_large(f"more than {limit}", limit, setting)
        return message

    return receive_capped


async def receive_body(
    headers: Mapping[str, str], receive: Callable[[], Awaitable[Any]], limit: int
) -> bytes:
    """The request body, decompressed if it says so; PayloadTooLarge past ``limit`` bytes.

    Read straight from the ASGI messages: a body in one message (the usual case) costs one
    ``await receive()``, with no async generator in between. ``headers`` has lower-case names.
    """
    check_length(headers.get("content-length"), limit)
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return _decoded(headers, body, limit)


def _decoded(headers: Mapping[str, str], body: bytes, limit: int) -> bytes:
    encoding = headers.get("content-encoding")
    if encoding is None:
        return body
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in WBITS:
        raise InvalidInput(
            f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or an uncompressed body"
        )
    return _decompress(body, encoding, limit)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate at most ``limit`` bytes, so a small compressed bomb cannot exhaust memory."""
    inflater = zlib.decompressobj(WBITS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(f"more than {limit} (decompressed)", limit)
    if not inflater.eof:
        raise InvalidInput(f"request body is truncated {encoding} data")
    return data
