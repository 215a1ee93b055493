"""``dockyard.Client``: a small HTTP client (httpx) for a Dockyard server: Open Inference Protocol
V2 inference, and the management API (models, aliases, API keys, security events, alerts) and
monitoring (the prediction log, delayed labels, drift) with a key.

Users call models and manage a remote registry with it; so do the CLI's ``--url`` commands, the
load test and the end-to-end tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import numpy as np

from dockyard import errors
from dockyard.datatypes import numpy_dtype, v2_datatype
from dockyard.errors import DockyardError

API_KEY_ENV = "DOCKYARD_API_KEY"
ERRORS_BY_STATUS: dict[int, type[DockyardError]] = {
    400: errors.InvalidInput,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    504: errors.PredictionTimeout,
}


def _error_for(response: httpx.Response) -> DockyardError:
    """Turn an error response into the matching Dockyard exception, keeping the server's message."""
    try:
        message = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        message = response.text or response.reason_phrase
    cls = ERRORS_BY_STATUS.get(response.status_code)
    if cls is not None:
        return cls(message)
    if response.status_code == 429:
        return errors.RateLimited(message)
    if response.status_code == 503:
        return errors.NotReady(message)
    return DockyardError(f"server answered {response.status_code}: {message}")


UPLOAD_TIMEOUT_S = 300.0
"""At least this long for a registration: the server stores, loads and checks the model."""
LABELS_PER_REQUEST = 10_000
"""Labels sent to a server in one request: well under its body limit for ids of usual length."""


class Client:
    """Talks V2 to a Dockyard (or any Open Inference Protocol) server, and manages a Dockyard
    server's registry and keys through ``/api`` (which needs a key allowed to do so)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        """``api_key`` defaults to ``$DOCKYARD_API_KEY``, as the CLI's ``--url`` does."""
        api_key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> Any:
        return self._call("GET", path)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a server that cannot be reached or does not answer in time is a Dockyard
        error naming the URL (NotReady, PredictionTimeout), not httpx's."""
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise errors.PredictionTimeout(
                f"no answer from {self._http.base_url} within {self._timeout:g} s ({method} {path})"
            ) from None
        except httpx.TransportError as exc:
            raise errors.NotReady(f"cannot reach {self._http.base_url}: {exc}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; its JSON answer, or the Dockyard error its status maps to."""
        response = self._send(method, path, **kwargs)
        if response.status_code not in (200, 201):
            raise _error_for(response)
        return response.json()

    def is_live(self) -> bool:
        """Whether the server answers its liveness probe (False when it cannot be reached)."""
        try:
            return self._send("GET", "/v2/health/live").status_code == 200
        except errors.NotReady:
            return False

    def is_ready(self) -> bool:
        try:
            return self._send("GET", "/v2/health/ready").status_code == 200
        except errors.NotReady:
            return False

    def server_metadata(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/v2")
        return result

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._get(_model_path(model, version))
        return result

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | np.ndarray,
        *,
        version: str | None = None,
        outputs: Sequence[str] = (),
        request_id: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Send one inference request; return the outputs as numpy arrays keyed by name.

        ``inputs`` is a mapping of input name to array-like, or one 2-D array (sent as ``input-0``,
        which a tabular model accepts as its whole feature matrix).
        """
        named = {"input-0": inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
        body: dict[str, Any] = {"inputs": [_tensor(name, value) for name, value in named.items()]}
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        if request_id is not None:
            body["id"] = request_id
        response = self._send("POST", f"{_model_path(model, version)}/infer", json=body)
        if response.status_code != 200:
            raise _error_for(response)
        return {
            item["name"]: np.asarray(item["data"], dtype=numpy_dtype(item["datatype"])).reshape(
                item["shape"]
            )
            for item in response.json()["outputs"]
        }

    # Management (``/api``): the same services as the CLI, acting as the key's principal.

    def list_models(self) -> list[dict[str, Any]]:
        """Every model the key may see, with its latest version and aliases."""
        result: list[dict[str, Any]] = self._call("GET", "/api/models")
        return result

    def get_model(self, name: str) -> dict[str, Any]:
        """A model with its aliases, tags and every version (``"versions"``)."""
        result: dict[str, Any] = self._call("GET", _api_model(name))
        return result

    def get_version(self, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"{_api_model(name)}/versions/{int(version)}")
        return result

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a model, archived ones included, by number (each as ``get_version``
        gives it: aliases pointing at it, ``archived``, ``created_at``, ``created_by``, …)."""
        versions: list[dict[str, Any]] = self.get_model(name)["versions"]
        return versions

    def register(
        self,
        path: str | Path,
        name: str,
        reference: str | Path | None = None,
        framework: str | None = None,
        description: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        alias: str | None = None,
        *,
        signature: Mapping[str, Any] | None = None,
        allow_pickle: bool = False,
        trusted_types: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Upload a model file (and reference data: .csv, .json or .npy) as a new version.

        The server detects the framework from the file's suffix, as the CLI does; ``allow_pickle``
        and ``trusted_types`` are refused unless the key is an admin's and the server allows them.
        """
        model_path = Path(path)
        if not model_path.is_file():
            raise errors.InvalidInput(
                f"{model_path} is not a file: only a model file can be uploaded (register a "
                "Python-function folder on the server's machine)"
            )
        fields: dict[str, str] = {"name": name}
        for field, text in (("framework", framework), ("description", description)):
            if text is not None:
                fields[field] = text
        for field, mapping in (
            ("metrics", metrics),
            ("params", params),
            ("tags", tags),
            ("signature", signature),
        ):
            if mapping is not None:
                fields[field] = json.dumps(dict(mapping))
        if alias is not None:
            fields["alias"] = alias
        if allow_pickle:
            fields["allow_pickle"] = "true"
        if trusted_types:
            fields["trusted_types"] = json.dumps(list(trusted_types))
        with model_path.open("rb") as model_file:
            files: dict[str, tuple[str, IO[bytes]]] = {"model": (model_path.name, model_file)}
            if reference is None:
                return self._upload(fields, files)
            reference_path = Path(reference)
            with reference_path.open("rb") as reference_file:
                files["reference"] = (reference_path.name, reference_file)
                return self._upload(fields, files)

    def _upload(
        self, fields: dict[str, str], files: dict[str, tuple[str, IO[bytes]]]
    ) -> dict[str, Any]:
        timeout = max(self._timeout, UPLOAD_TIMEOUT_S)
        result: dict[str, Any] = self._call(
            "POST", "/api/models", data=fields, files=files, timeout=timeout
        )
        return result

    def update_model(
        self, name: str, description: str | None = None, tags: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Change a model's description and/or replace its tags; the model as it is now."""
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        result: dict[str, Any] = self._call("PATCH", _api_model(name), json=body)
        return result

    def archive(self, name: str, version: int) -> dict[str, Any]:
        """Archive a version (kept, no longer served by default); the version."""
        path = f"{_api_model(name)}/versions/{int(version)}/archive"
        result: dict[str, Any] = self._call("POST", path)
        return result

    def unarchive(self, name: str, version: int) -> dict[str, Any]:
        """Make an archived version live again (a version that is not archived stays as it is);
        the version."""
        path = f"{_api_model(name)}/versions/{int(version)}/unarchive"
        result: dict[str, Any] = self._call("POST", path)
        return result

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (moving it if it exists); the version it points at."""
        path = f"{_api_model(name)}/aliases/{quote(alias, safe='')}"
        result: dict[str, Any] = self._call("PUT", path, json={"version": int(version)})
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", f"{_api_model(name)}/aliases/{quote(alias, safe='')}")

    def create_key(
        self,
        name: str,
        role: str,
        models: Sequence[str] | None = None,
        expires: str | timedelta | None = None,
        rate: str | None = None,
    ) -> dict[str, Any]:
        """A new API key: its record, and under ``"key"`` the key itself, shown only this once.

        ``expires`` is a lifetime such as ``"90d"`` (or a timedelta); ``rate`` such as ``100/s``.
        """
        body: dict[str, Any] = {"name": name, "role": role}
        if models is not None:
            body["models"] = list(models)
        if expires is not None:
            body["expires"] = _duration(expires)
        if rate is not None:
            body["rate"] = rate
        result: dict[str, Any] = self._call("POST", "/api/keys", json=body)
        return result

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key, revoked and expired ones too, with its state (never the keys themselves)."""
        result: list[dict[str, Any]] = self._call("GET", "/api/keys")
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key (by id, or the name of one active key); servers refuse it within about a
        second."""
        result: dict[str, Any] = self._call("DELETE", f"/api/keys/{quote(key_id, safe='')}")
        return result

    def rotate_key(self, key_id: str, grace: str | timedelta | None = None) -> dict[str, Any]:
        """A new key replacing ``key_id`` (``"key"``: shown once); the old one keeps working for
        ``grace`` (default: not at all)."""
        path = f"/api/keys/{quote(key_id, safe='')}/rotate"
        body = {"json": {"grace": _duration(grace)}} if grace is not None else {}
        result: dict[str, Any] = self._call("POST", path, **body)
        return result

    def security_events(
        self, since: str | timedelta | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Security events (refusals, failed authentications, rate limits), oldest first;
        ``since`` a window such as ``"1h"``."""
        params: dict[str, str | int] = {}
        if since is not None:
            params["since"] = _duration(since)
        if limit is not None:
            params["limit"] = limit
        result: list[dict[str, Any]] = self._call("GET", "/api/security/events", params=params)
        return result

    def alerts(self, everything: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        """The open alerts (``everything``: resolved ones too), newest first."""
        params: dict[str, str | int] = {"state": "all" if everything else "open", "limit": limit}
        result: list[dict[str, Any]] = self._call("GET", "/api/alerts", params=params)
        return result

    # Monitoring: the prediction log, delayed labels and drift of a served model.

    def predictions(
        self,
        model: str,
        *,
        since: str | timedelta | None = None,
        version: int | None = None,
        limit: int = 1000,
        format: str = "json",
    ) -> bytes:
        """The prediction log of ``model``: the newest ``limit`` rows logged in the last ``since``
        (``"30m"``, ``"1h"``, ``"7d"`` or a timedelta; default: the server's, 1 hour), in time
        order, of one ``version`` if given, as the server encodes them in ``format``: ``"json"``
        (an array of rows), ``"csv"`` or ``"parquet"``. Needs a key that may read predictions."""
        params: dict[str, str | int] = {"limit": limit, "format": format}
        if since is not None:
            params["since"] = _duration(since)
        if version is not None:
            params["version"] = int(version)
        response = self._send("GET", f"{_api_model(model)}/predictions", params=params)
        if response.status_code != 200:
            raise _error_for(response)
        return response.content

    def send_feedback(self, model: str, labels: Sequence[Mapping[str, Any]]) -> int:
        """Attach ground truth to logged predictions of ``model``: each label a mapping with
        ``request_id`` (the ``X-Request-ID`` of the answer), ``label`` and optionally ``row``
        (default 0). Sent in requests of at most ``LABELS_PER_REQUEST`` labels (none for no
        labels); the number stored."""
        items = [dict(label) for label in labels]
        path = f"/v2/models/{quote(model, safe='')}/feedback"
        stored = 0
        for start in range(0, len(items), LABELS_PER_REQUEST):
            chunk = items[start : start + LABELS_PER_REQUEST]
            answer: dict[str, Any] = self._call("POST", path, json={"labels": chunk})
            stored += int(answer["labels"])
        return stored

    def drift(
        self, model: str, *, window: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """Drift of ``model``'s logged traffic from its reference profile, computed now: per
        feature and output the PSI, KS or chi-square p-value, whether it drifted, and data
        quality. ``window``: the newest traffic to compare (``"24h"``, ``"100000rows"``; default:
        the server's ``drift_window``); ``version``: that one (default: the production alias,
        else the latest)."""
        params: dict[str, str | int] = {}
        if window is not None:
            params["window"] = window
        if version is not None:
            params["version"] = int(version)
        result: dict[str, Any] = self._call("GET", f"{_api_model(model)}/drift", params=params)
        return result

    # Governance: the policy's gates and four-eyes promotion of a protected alias.

    def report(
        self,
        model: str,
        *,
        version: int | None = None,
        format: str = "html",
        window: str | None = None,
    ) -> str:
        """``model``'s compliance report (of ``version``, default: the production alias's, else
        the latest) as the server renders it: one offline HTML page or JSON text. Needs a key
        that may read the audit trail (auditor, approver, admin)."""
        params: dict[str, str | int] = {"format": format}
        if version is not None:
            params["version"] = int(version)
        if window is not None:
            params["window"] = window
        response = self._send("GET", f"{_api_model(model)}/report", params=params)
        if response.status_code != 200:
            raise _error_for(response)
        return response.text

    def check_policy(self, model: str, version: int, alias: str | None = None) -> dict[str, Any]:
        """Every gate of the server's policy for pointing ``alias`` (default: its first protected
        alias) at ``model:version``: ``passed``, and ``gates`` (``name``, ``passed``,
        ``detail``)."""
        params = {} if alias is None else {"alias": alias}
        path = f"{_api_model(model)}/versions/{int(version)}/policy"
        result: dict[str, Any] = self._call("GET", path, params=params)
        return result

    def request_promotion(
        self, model: str, version: int, alias: str, comment: str = ""
    ) -> dict[str, Any]:
        """Request pointing the protected ``alias`` at ``model:version`` (the key needs
        ``move_alias``); Conflict naming each failing gate. The pending request."""
        body = {"version": int(version), "alias": alias, "comment": comment}
        result: dict[str, Any] = self._call("POST", f"{_api_model(model)}/promotions", json=body)
        return result

    def promotions(
        self, model: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Promotion requests, newest first, of ``model`` and in ``state`` (``pending``,
        ``approved``, ``rejected``) when given."""
        params = {key: value for key, value in (("model", model), ("state", state)) if value}
        result: list[dict[str, Any]] = self._call("GET", "/api/promotions", params=params)
        return result

    def approve_promotion(self, promotion_id: int, comment: str = "") -> dict[str, Any]:
        """Approve a pending request (the key needs ``approve`` and must be neither the version's
        registrant nor the requester): the alias moves. The decided request."""
        path = f"/api/promotions/{int(promotion_id)}/approve"
        result: dict[str, Any] = self._call("POST", path, json={"comment": comment})
        return result

    def reject_promotion(self, promotion_id: int, comment: str) -> dict[str, Any]:
        """Reject a pending request, saying why; the decided request."""
        path = f"/api/promotions/{int(promotion_id)}/reject"
        result: dict[str, Any] = self._call("POST", path, json={"comment": comment})
        return result


def _api_model(name: str) -> str:
    return f"/api/models/{quote(name, safe='')}"


def _duration(value: str | timedelta) -> str:
    """A duration as the server takes it (``90d``, ``3600s``)."""
    if isinstance(value, timedelta):
        return f"{max(0, int(value.total_seconds()))}s"
    return value


def _model_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


def _tensor(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    datatype = v2_datatype(array.dtype)
    data = array.astype(str).ravel().tolist() if datatype == "BYTES" else array.ravel().tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
