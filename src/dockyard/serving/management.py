"""Management API under ``/api``: models (list, inspect, register, update, archive, unarchive,
aliases), API keys and security events.

Every route acts as the principal the access guard put on the request, through the same services
as the CLI and the Python API; blocking work runs in a worker thread. Loading options that let a
model file run code (``allow_pickle``, ``trusted_types``) are refused unless the caller may
register code (admin) and the server allows it (``allow_pickle_uploads``, off by default).
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

from dockyard.config import Settings
from dockyard.errors import Forbidden, InvalidInput, PayloadTooLarge
from dockyard.registry.store import utc_now
from dockyard.security.keystore import parse_duration
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, Role, parse_role
from dockyard.services import changes
from dockyard.services.datafiles import UPLOAD_SUFFIXES, as_reference, read_columns
from dockyard.services.register import Registration, register
from dockyard.services.staging import staging_folder
from dockyard.serving.api_requests import (
    STRING,
    json_body,
    json_schema,
    media_type,
    principal_of,
    workspace_of,
)
from dockyard.serving.auth import Authenticator
from dockyard.serving.bodies import capped, check_length

SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
UPLOAD_CHUNK = 1024 * 1024
UPLOAD_SETTING = "max_upload_bytes"
FORM_TYPE = "multipart/form-data"
CODE_RUNNING_FIELDS = {"allow_pickle": "--allow-pickle", "trusted_types": "--trusted-type TYPE"}
"""Registration options that let the model file run code when loaded, and the CLI flag for each."""
EVENTS_LIMIT = 10_000
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


async def _keys_changed(request: Request) -> None:
    """A key was created, revoked or rotated: this worker reloads its keys at once."""
    auth: Authenticator = request.app.state.auth
    await auth.reload_keys()


ALIAS_SCHEMA = json_schema({"version": 1}, {"version": {"type": "integer", "minimum": 1}})
UPDATE_SCHEMA = json_schema(
    {"description": "fraud model", "tags": {"team": "risk"}},
    {"description": STRING, "tags": {"type": "object", "additionalProperties": STRING}},
)
KEY_SCHEMA = json_schema(
    {"name": "ci-bot", "role": "predictor", "models": ["fraud"], "expires": "90d"},
    {
        "name": STRING,
        "role": {"type": "string", "enum": [role.value for role in Role]},
        "models": {"type": "array", "items": STRING},
        "expires": STRING,
        "rate": STRING,
    },
)
ROTATE_SCHEMA = json_schema({"grace": "1h"}, {"grace": STRING})


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


def _is_off(field: str, value: str) -> bool:
    """Whether a code-running option's value asks for nothing: false, or an empty list."""
    text = value.strip().lower()
    if field == "allow_pickle" or not text:
        return text in OFF_VALUES
    try:
        return bool(json.loads(text) == [])
    except ValueError:
        return False


def _code_running_options(form: FormData) -> tuple[bool, tuple[str, ...]]:
    """``allow_pickle`` and ``trusted_types`` as asked for in the form (off when absent)."""
    allow_pickle, trusted = False, []
    for field in CODE_RUNNING_FIELDS:
        for value in form.getlist(field):
            if not isinstance(value, str):
                raise InvalidInput(f"form field {field!r} must be text, not a file")
            if _is_off(field, value):
                continue
            if field == "allow_pickle":
                allow_pickle = True
                continue
            try:
                names = json.loads(value)
            except ValueError:
                names = value.split(",")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InvalidInput("form field 'trusted_types' must be a JSON list of type names")
            trusted += [name.strip() for name in names if name.strip()]
    return allow_pickle, tuple(trusted)


def _check_code_running(principal: Principal, settings: Settings, name: str) -> None:
    """Forbidden unless both the caller (admin) and the server allow a model that runs code."""
    flags = " / ".join(CODE_RUNNING_FIELDS.values())
    if not principal.may(SERVICES["register_code"], name):
        raise Forbidden(
            "form fields 'allow_pickle' and 'trusted_types' let the model file run code in the "
            f"server: only an admin may send them. The operator can register such a model on the "
            f"server's machine with: dockyard models register PATH --name NAME {flags}"
        )
    if not settings.allow_pickle_uploads:
        raise Forbidden(
            "form fields 'allow_pickle' and 'trusted_types' let the model file run code in the "
            "server, and this server does not accept them over HTTP (the allow_pickle_uploads "
            f"setting is off). Register on the server's machine with: dockyard models register "
            f"PATH --name NAME {flags}"
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
        principal = principal_of(request)
        models = await run_in_threadpool(workspace_of(request).store.list_models)
        return [model.to_dict() for model in models if principal.sees(model.name)]

    @router.get("/models/{name}", summary="A model and its versions")
    async def show_model(request: Request, name: str) -> dict[str, Any]:
        store = workspace_of(request).store
        model = await run_in_threadpool(store.get_model, name)
        versions = await run_in_threadpool(store.list_versions, name)
        return {**model.to_dict(), "versions": [version.to_dict() for version in versions]}

    @router.patch(
        "/models/{name}",
        summary="Change a model's description or tags",
        openapi_extra=UPDATE_SCHEMA,
    )
    async def update_model(request: Request, name: str) -> dict[str, Any]:
        shape = '{"description": "...", "tags": {"key": "value"}}'
        body = await json_body(request, shape)
        description, tags = body.get("description"), body.get("tags")
        if description is None and tags is None:
            raise InvalidInput(f"give a description and/or tags: {shape}")
        if description is not None and not isinstance(description, str):
            raise InvalidInput("description must be a string")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise InvalidInput("tags must be an object of strings")
        model = await run_in_threadpool(
            changes.update_model,
            workspace_of(request),
            principal_of(request),
            name,
            description,
            tags,
        )
        return model.to_dict()

    @router.get("/models/{name}/versions/{version}", summary="One version")
    async def show_version(request: Request, name: str, version: int) -> dict[str, Any]:
        found = await run_in_threadpool(workspace_of(request).store.get_version, name, version)
        return found.to_dict()

    @router.post("/models/{name}/versions/{version}/archive", summary="Archive a version")
    async def archive_version(request: Request, name: str, version: int) -> dict[str, Any]:
        archived = await run_in_threadpool(
            changes.archive, workspace_of(request), principal_of(request), name, version
        )
        return archived.to_dict()

    @router.post("/models/{name}/versions/{version}/unarchive", summary="Unarchive a version")
    async def unarchive_version(request: Request, name: str, version: int) -> dict[str, Any]:
        live = await run_in_threadpool(
            changes.unarchive, workspace_of(request), principal_of(request), name, version
        )
        return live.to_dict()

    @router.put(
        "/models/{name}/aliases/{alias}",
        summary="Point an alias at a version",
        openapi_extra=ALIAS_SCHEMA,
    )
    async def set_alias(request: Request, name: str, alias: str) -> dict[str, Any]:
        version = (await json_body(request, '{"version": n}')).get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInput('body must be {"version": <whole number>}')
        moved = await run_in_threadpool(
            changes.set_alias, workspace_of(request), principal_of(request), name, alias, version
        )
        return moved.to_dict()

    @router.delete("/models/{name}/aliases/{alias}", summary="Remove an alias")
    async def delete_alias(request: Request, name: str, alias: str) -> dict[str, str]:
        await run_in_threadpool(
            changes.delete_alias, workspace_of(request), principal_of(request), name, alias
        )
        return {"deleted": f"{name}@{alias}"}

    @router.post("/models", summary="Register a model version", openapi_extra=REGISTER_SCHEMA)
    async def register_version(request: Request) -> JSONResponse:
        workspace = workspace_of(request)
        principal = principal_of(request)
        if media_type(request) != FORM_TYPE:
            raise InvalidInput(f"POST /api/models takes {FORM_TYPE}: the model file and fields")
        check_length(request.headers.get("content-length"), max_upload_bytes, UPLOAD_SETTING)
        # The multipart parser spools the whole body before the route sees a field: count it
        # while it is received, so an oversized one stops at the limit.
        body = Request(request.scope, capped(request.receive, max_upload_bytes, UPLOAD_SETTING))
        async with body.form(max_files=2, max_fields=20) as form:
            name = _text(form, "name")
            if not name:
                raise InvalidInput("form field 'name' is required")
            allow_pickle, trusted_types = _code_running_options(form)
            if allow_pickle or trusted_types:
                _check_code_running(principal, request.app.state.settings, name)
            if form.get("model") is None:
                raise InvalidInput("form field 'model' (the model file) is required")
            with staging_folder(workspace.home.tmp, "upload") as folder:
                model = await _save_upload(form["model"], folder, "model", max_upload_bytes)
                reference, feature_names = None, None
                if form.get("reference") is not None:
                    path = await _save_upload(
                        form["reference"], folder, "reference", max_upload_bytes
                    )
                    reference, feature_names = as_reference(read_columns(path, UPLOAD_SUFFIXES))
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
                    allow_pickle=allow_pickle,
                    trusted_types=trusted_types,
                    alias=_text(form, "alias"),
                )
                if reference is None and registration.signature is None:
                    raise InvalidInput(
                        "form field 'reference' is required: a file of rows like the training "
                        "data (.csv, .json or .npy), which give the signature and the rows "
                        "predicted before the version is accepted (or a 'signature' field)"
                    )
                version = await run_in_threadpool(
                    register, workspace, model, registration, principal
                )
        return JSONResponse(version.to_dict(), status_code=201)

    @router.get("/keys", summary="List API keys (never the keys themselves)")
    async def list_keys(request: Request) -> list[dict[str, Any]]:
        keys = workspace_of(request).keys
        records = await run_in_threadpool(keys.all)
        now = utc_now()
        return [record.to_dict(now) for record in records]

    @router.post("/keys", summary="Create an API key (shown once)", openapi_extra=KEY_SCHEMA)
    async def create_key(request: Request) -> JSONResponse:
        shape = '{"name": "ci-bot", "role": "predictor", "models": ["fraud"], "expires": "90d"}'
        body = await json_body(request, shape)
        name, role = body.get("name"), body.get("role")
        models, expires, rate = body.get("models"), body.get("expires"), body.get("rate")
        if not isinstance(name, str) or not isinstance(role, str):
            raise InvalidInput(f"name and role are required strings: {shape}")
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            raise InvalidInput("models must be a list of model names")
        if expires is not None and not isinstance(expires, str):
            raise InvalidInput("expires must be a duration such as 90d")
        if rate is not None and not isinstance(rate, str):
            raise InvalidInput("rate must be a rate such as 100/s")
        record, key = await run_in_threadpool(
            workspace_of(request).keys.create,
            principal_of(request),
            name,
            parse_role(role),
            models,
            parse_duration(expires) if expires else None,
            rate,
        )
        await _keys_changed(request)
        return JSONResponse({**record.to_dict(utc_now()), "key": key}, status_code=201)

    @router.delete("/keys/{key_id}", summary="Revoke an API key")
    async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
        record = await run_in_threadpool(
            workspace_of(request).keys.revoke, principal_of(request), key_id
        )
        await _keys_changed(request)
        return record.to_dict(utc_now())

    @router.post(
        "/keys/{key_id}/rotate",
        summary="Replace an API key (shown once)",
        openapi_extra=ROTATE_SCHEMA,
    )
    async def rotate_key(request: Request, key_id: str) -> JSONResponse:
        grace = "0s"
        if request.headers.get("content-length", "0") != "0":
            grace = (await json_body(request, '{"grace": "1h"}')).get("grace", grace)
        if not isinstance(grace, str):
            raise InvalidInput("grace must be a duration such as 1h")
        record, key = await run_in_threadpool(
            workspace_of(request).keys.rotate, principal_of(request), key_id, parse_duration(grace)
        )
        await _keys_changed(request)
        return JSONResponse({**record.to_dict(utc_now()), "key": key}, status_code=201)

    @router.get("/security/events", summary="Security events, oldest first")
    async def security_events(
        request: Request, since: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= EVENTS_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {EVENTS_LIMIT}")
        window = parse_duration(since) if since else None
        events = await run_in_threadpool(workspace_of(request).events.query, window, limit)
        return [event.to_dict() for event in events]

    return router
