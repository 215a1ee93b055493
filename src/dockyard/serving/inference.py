"""The two prediction endpoints as plain coroutines: bytes in, an Answer out.

The pure ASGI hot path and the documented FastAPI routes both call these, so there is one
implementation of V2 inference and one of V1 predict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field

from dockyard.errors import InvalidInput
from dockyard.serving.bodies import read_body
from dockyard.serving.gateway import Gateway
from dockyard.serving.instances import decode_v1, encode_v1
from dockyard.serving.protocol import HEADER_LENGTH, decode_infer, encode_infer

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful response: body, content type, extra headers."""

    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


async def infer_v2(
    gateway: Gateway,
    name: str,
    version: str | None,
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
    max_body_bytes: int,
) -> Answer:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""
    deployment = gateway.deployment(name, version)
    body = await read_body(headers, chunks, max_body_bytes)
    header_length = headers.get(HEADER_LENGTH_KEY)
    if header_length is not None and not header_length.isdigit():
        raise InvalidInput(f"header {HEADER_LENGTH} is not a number: {header_length!r}")
    decoded = decode_infer(body, int(header_length) if header_length is not None else None)
    requested = decoded.outputs
    outputs = (
        deployment.output_names(tuple(output.name for output in requested)) if requested else ()
    )
    x = deployment.input_plan.prepare(decoded.inputs)
    result = await deployment.infer(x, outputs)
    binary: Collection[str] = ()
    if decoded.binary_output:
        binary = set(result)
    elif requested:
        binary = {output.name for output in requested if output.binary}
    payload, json_length = encode_infer(
        model_name=deployment.name,
        model_version=str(deployment.version.version),
        request_id=decoded.id,
        outputs=result,
        binary=binary,
    )
    if json_length is None:
        return Answer(payload)
    return Answer(payload, BINARY, {HEADER_LENGTH: str(json_length)})


async def predict_v1(
    gateway: Gateway,
    name: str,
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
    max_body_bytes: int,
) -> Answer:
    """``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``."""
    deployment = gateway.deployment(name)
    body = await read_body(headers, chunks, max_body_bytes)
    signature = deployment.version.signature
    x = deployment.input_plan.prepare(decode_v1(body, signature))
    result = await deployment.infer(x, ())
    return Answer(encode_v1(result, signature.outputs[0].name))
