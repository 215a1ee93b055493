"""What an ``/api`` route takes from its request: the workspace, the principal it acts as, and a
JSON object body read within the body limit; and the OpenAPI description of such a body."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from dockyard.errors import InvalidInput
from dockyard.security.principals import Principal
from dockyard.services.workspace import Workspace
from dockyard.serving.bodies import receive_body

JSON_TYPE = "application/json"
STRING = {"type": "string"}


def workspace_of(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


def principal_of(request: Request) -> Principal:
    """Who the request acts as (set by ``serving.auth.AccessGuard``)."""
    principal: Principal = request.state.principal
    return principal


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def json_body(request: Request, shape: str) -> dict[str, Any]:
    """The request's JSON object body, read with the inference body limit (``max_body_bytes``:
    413 as soon as it is passed); ``shape`` describes it in the error."""
    if media_type(request) != JSON_TYPE:
        raise InvalidInput(f"Content-Type must be {JSON_TYPE}, with a body {shape}")
    limit = request.app.state.settings.max_body_bytes
    raw = await receive_body(request.headers, request.receive, limit)
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput(f"body must be JSON: {shape}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"body must be a JSON object: {shape}")
    text = json.dumps(body, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("body holds text that is not valid Unicode (a lone surrogate)") from None
    if "\x00" in text or "\\u0000" in text:
        raise InvalidInput("body holds a NUL character, which no stored text may contain")
    return body


def json_schema(example: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that takes one JSON object (for the docs and fuzzers)."""
    schema = {"type": "object", "properties": properties}
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_TYPE: {"schema": schema, "example": example}},
        }
    }


COMMENT_SHAPE = '{"comment": "..."}'
"""The body of an action that takes only an optional comment (a decision, a rollout's end)."""


def comment_of(body: dict[str, Any], shape: str) -> str:
    """The optional ``comment`` string of ``body`` (``shape`` describes the body in the error)."""
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise InvalidInput(f"'comment' must be a string: {shape}")
    return comment


async def optional_comment(request: Request) -> str:
    """The ``comment`` of a body that may be left out (an approval, a rollout's promote)."""
    if request.headers.get("content-length", "0") == "0":
        return ""
    return comment_of(await json_body(request, COMMENT_SHAPE), COMMENT_SHAPE)
