"""Management API under ``/api``: list and inspect models, register a version, move aliases.

Registration calls the same ``services.register`` as the CLI and the Python API; it runs in a
worker thread because saving, loading and checking a model is blocking work. Loading options that
let a model file run code (``allow_pickle``, ``trusted_types``) are refused here: a web client is
not the operator.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.responses import JSONResponse

from dockyard.errors import Forbidden, InvalidInput, PayloadTooLarge
from dockyard.services.datafiles import as_reference, read_columns
from dockyard.services.register import Registration, register
from dockyard.services.staging import staging_folder
from dockyard.services.workspace import Workspace
from dockyard.serving.bodies import capped, check_length

SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
UPLOAD_CHUNK = 1024 * 1024
UPLOAD_SETTING = "max_upload_bytes"
JSON_TYPE = "application/json"
FORM_TYPE = "multipart/form-data"
CODE_RUNNING_FIELDS = {"allow_pickle": "--allow-pickle", "trusted_types": "--trusted-type TYPE"}
"""Registration options that let the model file run code when loaded, and the CLI flag for each."""
OFF_VALUES = frozenset({"", "0", "false", "no", "off"})
REGISTER_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "model"],
                    "properties": {
                        "name": {"type": "string"},
                        "model": {"type": "string", "format": "binary"},
                        "reference": {"type": "string", "format": "binary"},
                        "framework": {"type": "string"},
                        "description": {"type": "string"},
                        "metrics": {"type": "string", "description": "JSON object"},
                        "params": {"type": "string", "description": "JSON object"},
                        "tags": {"type": "string", "description": "JSON object"},
                        "signature": {"type": "string", "description": "JSON object"},
                        "alias": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"form field {name!r} must be text, not a file")


def _json_field(form: FormData, name: str, kind: type) -> Any:
    text = _text(form, name)
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"form field {name!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise InvalidInput(f"form field {name!r} must be a JSON {kind.__name__}")
    return value


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _is_off(field: str, value: str) -> bool:
    """Whether a code-running option's value asks for nothing: false, or an empty list."""
    text = value.strip().lower()
    if field == "allow_pickle" or not text:
        return text in OFF_VALUES
    try:
        return bool(json.loads(text) == [])
    except ValueError:
        return False


def _refuse_code_running_options(form: FormData) -> None:
    """Forbidden for ``allow_pickle`` or ``trusted_types`` asking for anything: over HTTP they
    would let whoever reaches the port run code in the server."""
    for field, flag in CODE_RUNNING_FIELDS.items():
        for value in form.getlist(field):
            if not (isinstance(value, str) and _is_off(field, value)):
                raise Forbidden(
                    f"form field {field!r} is not accepted over HTTP: it lets the model file run "
                    "code in the server. The operator registers such a model on the server's "
                    f"machine with: dockyard models register PATH --name NAME {flag}"
                )


async def _save_upload(upload: Any, folder: Path, field: str, limit: int) -> Path:
    """Write an upload into ``folder`` under its sanitised name (the suffix drives detection)."""
    if not isinstance(upload, UploadFile):
        raise InvalidInput(f"form field {field!r} must be a file upload")
    name = SAFE_FILE_NAME.sub("_", Path(upload.filename or field).name) or field
    target = folder / f"{field}-{name}"
    size = 0
    with target.open("wb") as handle:
        while chunk := await upload.read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"upload {field!r} is over the limit of {limit} bytes")
            handle.write(chunk)
    return target


def build_router(max_upload_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Management"])

    @router.get("/models", summary="List models")
    async def list_models(request: Request) -> list[dict[str, Any]]:
        models = await run_in_threadpool(_workspace(request).store.list_models)
        return [model.to_dict() for model in models]

    @router.get("/models/{name}", summary="A model and its versions")
    async def show_model(request: Request, name: str) -> dict[str, Any]:
        store = _workspace(request).store
        model = await run_in_threadpool(store.get_model, name)
        versions = await run_in_threadpool(store.list_versions, name)
        return {**model.to_dict(), "versions": [version.to_dict() for version in versions]}

    @router.get("/models/{name}/versions/{version}", summary="One version")
    async def show_version(request: Request, name: str, version: int) -> dict[str, Any]:
        found = await run_in_threadpool(_workspace(request).store.get_version, name, version)
        return found.to_dict()

    @router.put("/models/{name}/aliases/{alias}", summary="Point an alias at a version")
    async def set_alias(request: Request, name: str, alias: str) -> dict[str, Any]:
        if _media_type(request) != JSON_TYPE:
            raise InvalidInput(f'Content-Type must be {JSON_TYPE}, with a body {{"version": n}}')
        try:
            version = int((await request.json())["version"])
        except (ValueError, KeyError, TypeError):
            raise InvalidInput('body must be {"version": <number>}') from None
        moved = await run_in_threadpool(_workspace(request).store.set_alias, name, alias, version)
        return moved.to_dict()

    @router.delete("/models/{name}/aliases/{alias}", summary="Remove an alias")
    async def delete_alias(request: Request, name: str, alias: str) -> dict[str, str]:
        await run_in_threadpool(_workspace(request).store.delete_alias, name, alias)
        return {"deleted": f"{name}@{alias}"}

    @router.post("/models", summary="Register a model version", openapi_extra=REGISTER_SCHEMA)
    async def register_version(request: Request) -> JSONResponse:
        workspace = _workspace(request)
        if _media_type(request) != FORM_TYPE:
            raise InvalidInput(f"POST /api/models takes {FORM_TYPE}: the model file and fields")
        check_length(request.headers.get("content-length"), max_upload_bytes, UPLOAD_SETTING)
        # The multipart parser spools the whole body before the route sees a field: count it
        # while it is received, so an oversized one stops at the limit.
        body = Request(request.scope, capped(request.receive, max_upload_bytes, UPLOAD_SETTING))
        async with body.form(max_files=2, max_fields=20) as form:
            _refuse_code_running_options(form)
            name = _text(form, "name")
            if not name:
                raise InvalidInput("form field 'name' is required")
            if form.get("model") is None:
                raise InvalidInput("form field 'model' (the model file) is required")
            with staging_folder(workspace.home.tmp, "upload") as folder:
                model = await _save_upload(form["model"], folder, "model", max_upload_bytes)
                reference, feature_names = None, None
                if form.get("reference") is not None:
                    path = await _save_upload(
                        form["reference"], folder, "reference", max_upload_bytes
                    )
                    reference, feature_names = as_reference(read_columns(path))
                registration = Registration(
                    name=name,
                    reference_data=reference,
                    feature_names=feature_names,
                    framework=_text(form, "framework"),
                    signature=_json_field(form, "signature", dict) or None,
                    metrics=_json_field(form, "metrics", dict),
                    params=_json_field(form, "params", dict),
                    tags=_json_field(form, "tags", dict),
                    description=_text(form, "description") or "",
                    alias=_text(form, "alias"),
                    created_by="api",
                )
                version = await run_in_threadpool(register, workspace, model, registration)
        return JSONResponse(version.to_dict(), status_code=201)

    return router
