"""The two prediction endpoints as plain coroutines: bytes in, an Answer out.

The pure ASGI hot path and the documented FastAPI routes both call these, and the gRPC service
calls ``predict_v2`` with the request it decoded, so there is one implementation of V2 inference
and one of V1 predict. Each takes a ``BodyReader`` rather than the
body, so an unknown model is answered before the body is read. A request naming no version of a
model under an active rollout is routed by it (``serving.rollout_routing``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from dockyard.errors import InvalidInput
from dockyard.registry.plans import no_rows
from dockyard.registry.records import ModelVersion
from dockyard.serving.bodies import BodyReader
from dockyard.serving.deployments import Deployment
from dockyard.serving.gateway import Gateway
from dockyard.serving.instances import decode_v1, encode_v1
from dockyard.serving.protocol import HEADER_LENGTH, InferRequest, decode_infer, encode_infer
from dockyard.serving.rollout_routing import ROUTES

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()


@dataclass(slots=True)
class Answer:
    """A successful response: body, content type, extra headers (not frozen: built per request,
    and a frozen dataclass's ``__init__`` costs ~2.5x the instructions). Never mutated.

    For the worker's monitoring (``Monitor.observe``) it also carries the version that answered,
    the request's tensors as decoded and the model's outputs: references, no copies."""

    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] | None = None
    version: ModelVersion | None = None
    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Mapping[str, np.ndarray] | None = None


async def infer_v2(
    gateway: Gateway,
    name: str,
    version: str | None,
    headers: Mapping[str, str],
    read_body: BodyReader,
) -> Answer:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""
    deployment = gateway.deployment(name, version).answering()
    body = await read_body()
    header_length = headers.get(HEADER_LENGTH_KEY)
    if header_length is None:
        decoded = decode_infer(body)
    elif header_length.isdigit():
        decoded = decode_infer(body, int(header_length))
    else:
        raise InvalidInput(f"header {HEADER_LENGTH} is not a number: {header_length!r}")
    deployment, result, binary = await predict_v2(gateway, deployment, name, version, decoded)
    payload, json_length = encode_infer(
        model_name=deployment.name,
        model_version=str(deployment.version.version),
        request_id=decoded.id,
        outputs=result,
        binary=binary,
    )
    if json_length is None:
        return Answer(payload, JSON, None, deployment.version, decoded.inputs, result)
    length = {HEADER_LENGTH: str(json_length)}
    return Answer(payload, BINARY, length, deployment.version, decoded.inputs, result)


async def predict_v2(
    gateway: Gateway,
    deployment: Deployment,
    name: str,
    version: str | None,
    decoded: InferRequest,
) -> tuple[Deployment, dict[str, np.ndarray], Collection[str]]:
    """A decoded V2 request predicted by ``deployment`` (the one ``gateway`` answers ``name``
    and ``version`` with) or the version an active rollout routes it to: the deployment that
    answered, its outputs (the requested ones, else all) and the names of those to send as
    binary data. The REST and the gRPC front ends both call this: one implementation."""
    shadow = None
    if version is None:
        route = ROUTES.get(name)
        if route is not None:
            deployment, shadow = ROUTES.pick(
                gateway, route, deployment, decoded.inputs, decoded.parameters
            )
    requested = decoded.outputs
    outputs: tuple[str, ...] = ()
    binary: Collection[str] = ()
    if requested:
        names: list[str] = []
        binary = []
        for output in requested:  # one loop, not two comprehensions (each a function call)
            names.append(output.name)
            if output.binary:
                binary.append(output.name)
        outputs = deployment.output_names(tuple(names))
    x = deployment.input_plan.prepare(decoded.inputs)
    if decoded.empty:
        result = _no_rows(deployment, outputs)
    else:
        result = await deployment.infer(x, outputs)
        if shadow is not None:
            ROUTES.mirror(shadow, decoded.inputs, outputs, result)
    if decoded.binary_output:
        binary = result.keys()
    return deployment, result, binary


async def predict_v1(gateway: Gateway, name: str, read_body: BodyReader) -> Answer:
    """``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``."""
    deployment = gateway.deployment(name).answering()
    body = await read_body()
    signature = deployment.version.signature
    tensors = decode_v1(body, signature)
    shadow = None
    route = ROUTES.get(name)
    if route is not None:
        deployment, shadow = ROUTES.pick(gateway, route, deployment, tensors, None)
    x = deployment.input_plan.prepare(tensors)
    if any(not array.size for array in tensors.values()):
        result = _no_rows(deployment, ())
    else:
        result = await deployment.infer(x, ())
        if shadow is not None:
            ROUTES.mirror(shadow, tensors, (), result)
    body = encode_v1(result, signature.outputs[0].name)
    return Answer(body, JSON, None, deployment.version, tensors, result)


def _no_rows(deployment: Deployment, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The answer to an empty batch, which the input plan let through only when no input has a
    row: each output (the requested ones, else all) with no rows, shaped and typed as the
    signature says. The model is not asked: many refuse zero rows (scikit-learn raises)."""
    specs = {spec.name: spec for spec in deployment.version.signature.outputs}
    return {name: no_rows(specs[name]) for name in outputs or specs}
