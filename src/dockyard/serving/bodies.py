"""Reading request bodies safely: a size cap checked while streaming, and capped decompression.

Framework-free: it takes the request's headers and an async iterator of body chunks, so the pure
ASGI hot path and the FastAPI routes share it.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping

from dockyard.errors import InvalidInput, PayloadTooLarge

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _too_large(size: str | int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is {size} bytes; the limit is {limit} bytes (setting max_body_bytes)"
    )


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, decompressed if it says so; PayloadTooLarge past ``limit`` bytes.

    ``headers`` has lower-case names.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(declared, limit)
    parts = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        parts.append(chunk)
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    encoding = headers.get("content-encoding", "identity").strip().lower()
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
