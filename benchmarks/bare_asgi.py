"""A bare ASGI callable (no framework) serving one model over V2 JSON: Dockyard's reference.

It does the least a V2 server can: read the body, parse it with orjson, call ``predict_proba`` and
answer V2 JSON; any GET is a health check. Run under uvicorn (uvloop, httptools, no access log):
``python benchmarks/bare_asgi.py MODEL.joblib --port P [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import uvicorn

MODEL_ENV = "BENCH_MODEL_FILE"
READY = orjson.dumps({"ready": True})
HEADERS = [(b"content-type", b"application/json")]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": body})


def create_app() -> App:
    """The app, with the model named by ``$BENCH_MODEL_FILE`` loaded (uvicorn's factory)."""
    model = joblib.load(os.environ[MODEL_ENV])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await _answer(send, 200, READY)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            tensor = orjson.loads(b"".join(chunks))["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
            proba = model.predict_proba(x)
        except Exception as exc:  # a reference server: any bad request is a 400
            await _answer(send, 400, orjson.dumps({"error": str(exc)}))
            return
        output = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape)}
        output["data"] = proba.ravel()
        payload = {"model_name": "model", "outputs": [output]}
        await _answer(send, 200, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

    return app


def serve(factory: str, description: str | None) -> None:
    """Parse ``MODEL --port P [--workers N]`` and run ``factory`` (``module:create_app``) under
    uvicorn with uvloop and httptools, no lifespan, no access log; shared by both references."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", type=Path, help="a joblib file holding a fitted classifier")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ[MODEL_ENV] = str(args.model.resolve())
    uvicorn.run(
        factory,
        factory=True,
        app_dir=str(Path(__file__).parent),
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


def main() -> None:
    serve("bare_asgi:create_app", __doc__)


if __name__ == "__main__":
    main()
