"""``dockyard.Client``: a small Open Inference Protocol V2 client over HTTP (httpx).

Users call models with it, and so do the load test and the end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from dockyard import errors
from dockyard.datatypes import numpy_dtype, v2_datatype
from dockyard.errors import DockyardError

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


class Client:
    """Talks V2 to a Dockyard (or any Open Inference Protocol) server."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        if response.status_code != 200:
            raise _error_for(response)
        return response.json()

    def is_live(self) -> bool:
        return self._http.get("/v2/health/live").status_code == 200

    def is_ready(self) -> bool:
        return self._http.get("/v2/health/ready").status_code == 200

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
        response = self._http.post(f"{_model_path(model, version)}/infer", json=body)
        if response.status_code != 200:
            raise _error_for(response)
        return {
            item["name"]: np.asarray(item["data"], dtype=numpy_dtype(item["datatype"])).reshape(
                item["shape"]
            )
            for item in response.json()["outputs"]
        }


def _model_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


def _tensor(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    datatype = v2_datatype(array.dtype)
    data = array.astype(str).ravel().tolist() if datatype == "BYTES" else array.ravel().tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
