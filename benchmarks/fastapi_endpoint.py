"""A minimal hand-written FastAPI endpoint serving one model over V2 JSON: a framework reference.

The same work as ``bare_asgi.py`` (orjson in, ``predict_proba``, orjson out) behind FastAPI routing.
Run: ``python benchmarks/fastapi_endpoint.py MODEL.joblib --port P [--workers N]``.
"""

from __future__ import annotations

import os

import bare_asgi
import joblib
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

MODEL_ENV = bare_asgi.MODEL_ENV


def create_app() -> FastAPI:
    """The app, with the model named by ``$BENCH_MODEL_FILE`` loaded (uvicorn's factory)."""
    model = joblib.load(os.environ[MODEL_ENV])
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        tensor = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        proba = model.predict_proba(x)
        output = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape)}
        output["data"] = proba.ravel()
        payload = {"model_name": name, "outputs": [output]}
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )

    return app


def main() -> None:
    bare_asgi.serve("fastapi_endpoint:create_app", __doc__)


if __name__ == "__main__":
    main()
