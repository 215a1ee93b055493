"""A plain Ray Serve deployment of one model, reached through Ray's own HTTP proxy: the reference
the Ray backend is measured against.

It is what the Ray Serve documentation shows: a deployment class whose ``__call__`` takes the
Starlette request, here doing the bare ASGI reference's work (parse the V2 JSON body with orjson,
``predict_proba``, answer V2 JSON), one replica with one CPU, behind the proxy on 127.0.0.1. It
starts a Ray instance of its own, pinned to loopback like Dockyard's (``--node-ip-address`` and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and runs until stopped; any GET answers ready.
``python benchmarks/ray_serve_plain.py MODEL.joblib --port P``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

for _name, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_name, _value)

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

READY = orjson.dumps({"ready": True})


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
class Model:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(READY, media_type="application/json")
        try:
            tensor: dict[str, Any] = orjson.loads(await request.body())["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
            proba = self.model.predict_proba(x)
        except Exception as exc:  # a reference server: any bad request is a 400
            return Response(orjson.dumps({"error": str(exc)}), status_code=400)
        output = {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape)}
        output["data"] = proba.ravel()
        payload = {"model_name": "model", "outputs": [output]}
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="a joblib file holding a fitted classifier")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(
        address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Model.bind(str(args.model.resolve())), name="model", route_prefix="/")
    while True:  # the bench stops this process's session (and Ray's processes with it)
        time.sleep(60)


if __name__ == "__main__":
    main()
