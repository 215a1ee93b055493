"""Errors as HTTP answers: the one mapping from an exception to status, headers and JSON body."""

from __future__ import annotations

import logging

from starlette.types import Send

from dockyard.errors import (
    DockyardError,
    ModelCrashed,
    NotReady,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    storage_full,
)
from dockyard.reliability.logs import QUOTES_REQUEST
from dockyard.serving.protocol import encode_error

logger = logging.getLogger(__name__)
HIDDEN_ROOTS: dict[str, str] = {}
"""Folders whose paths never reach a client, and what stands in for them (``hide_paths``)."""


def hide_paths(roots: dict[str, str]) -> None:
    """From now on, write ``roots``' paths in error answers as their stand-ins (the home as
    ``$DOCKYARD_HOME``): the server's file layout is nobody else's business."""
    merged = {**HIDDEN_ROOTS, **{root: shown for root, shown in roots.items() if root}}
    HIDDEN_ROOTS.clear()
    # Longest first: a folder inside another is replaced before its parent.
    HIDDEN_ROOTS.update(sorted(merged.items(), key=lambda item: -len(item[0])))


def public_message(message: str) -> str:
    """``message`` with every hidden folder's path replaced by its stand-in."""
    for root, shown in HIDDEN_ROOTS.items():
        if root in message:
            message = message.replace(root, shown)
    return message


def answered_error(error: BaseException, request_id: str) -> DockyardError:
    """The error a request is answered with, for every front end (HTTP, gRPC): a DockyardError
    as it is (a full disk as ``StorageFull``); anything else logged with the request id and
    answered as an internal error that names only that id. Server faults are logged once here;
    logged tracebacks withhold the messages of foreign exceptions (``QUOTES_REQUEST``): they may
    quote the request's values."""
    error = storage_full(error) or error
    if not isinstance(error, DockyardError):
        logger.error("request %s failed", request_id, exc_info=error, extra=QUOTES_REQUEST)
        return DockyardError(f"internal server error (request id {request_id}); see the server log")
    # NotReady (a model that failed to load, shed load, an open circuit) is the server's state,
    # not a fault of this request: logged where the state arises, not once per request.
    if error.http_status >= 500 and not isinstance(error, NotReady):
        logger.error(
            "request %s failed: %s", request_id, error, exc_info=error, extra=QUOTES_REQUEST
        )
    return error


def error_answer(error: BaseException, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """Status, extra headers and ``{"error": …}`` body for any exception raised by a request
    (``answered_error``: a DockyardError's message is meant for the client, anything else is a
    generic 500 naming the request id)."""
    error = answered_error(error, request_id)
    headers = {}
    if isinstance(error, RateLimited | NotReady):
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    elif isinstance(error, ModelCrashed):  # its process is restarted by the next request
        headers["Retry-After"] = "1"
    elif isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="dockyard"'
    elif isinstance(error, PayloadTooLarge):
        # The rest of the body is never read: close rather than parse and drop it.
        headers["Connection"] = "close"
    return error.http_status, headers, encode_error(public_message(error.message))


async def send_error(
    send: Send, error: BaseException, request_id: str = "-", *, close: bool = False
) -> None:
    """Answer ``error`` as ``error_answer`` says, from pure ASGI code; ``close`` ends the
    connection too (for an answer sent before the request body was read)."""
    status, headers, body = error_answer(error, request_id)
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [
        (key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()
    ]
    if close and "Connection" not in headers:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
