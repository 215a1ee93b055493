"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) over the gateway.

Each method is checked as its REST route is (credentials from the ``authorization: Bearer`` or
``x-api-key`` metadata, the permission table's ``RPCS``, rate limits), and ``ModelInfer`` predicts
through ``serving.inference.predict_v2``, the coroutine the REST hot path calls: the same
deployments, batchers, breakers, rollouts and monitor. Errors are the one exception tree's, each
answered with its ``grpc_status`` and the message REST sends; a gRPC deadline bounds the
prediction (``DEADLINE_EXCEEDED``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import NoReturn, Protocol

import grpc

from dockyard.errors import (
    DockyardError,
    ModelCrashed,
    NotReady,
    PredictionTimeout,
    RateLimited,
    Unauthenticated,
)
from dockyard.monitoring.monitor import Monitor
from dockyard.registry.records import TensorSpec
from dockyard.reliability.logs import REQUEST_ID as CURRENT_REQUEST_ID
from dockyard.reliability.logs import access
from dockyard.security.permissions import RPCS
from dockyard.security.principals import OPEN, Principal
from dockyard.serving.auth import Authenticator, credential
from dockyard.serving.failures import answered_error, public_message
from dockyard.serving.gateway import Gateway
from dockyard.serving.grpc_codec import decode_request, encode_response, wants_raw
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from dockyard.serving.inference import predict_v2
from dockyard.serving.rollout_routing import failed_version

SERVER_NAME = "dockyard"
SERVICE = "/inference.GRPCInferenceService/"
ROUTE = "grpc"
"""The ``route`` label of gRPC requests in the metrics (REST's are ``v2`` and ``v1``)."""
METHOD = "GRPC"
"""What stands for the HTTP method in access records and security events."""
OK = 200
"""The status counted for an answered call: metrics and access records keep the HTTP status a
REST client would have had, so one dashboard reads both protocols."""
LIVE = pb.ServerLiveResponse(live=True)


class Context(Protocol):
    """What the service uses of ``grpc.aio.ServicerContext`` (grpcio ships no type hints)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...

    def time_remaining(self) -> float | None: ...

    def peer(self) -> str: ...

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[tuple[str, str]]
    ) -> NoReturn: ...


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six methods of the V2 gRPC service, for one worker's gateway."""

    def __init__(
        self,
        gateway: Gateway,
        auth: Authenticator,
        version: str,
        monitor: Monitor | None = None,
        access_log: bool = False,
    ) -> None:
        """``version``: Dockyard's, for server metadata; ``monitor`` is told of every
        ``ModelInfer`` once it is answered; with ``access_log`` each call is logged."""
        self.gateway = gateway
        self.auth = auth
        self.version = version
        self._access = access_log
        self._logs = monitor is not None and monitor.log is not None
        measures = monitor is not None and monitor.metrics is not None
        self._monitor = monitor if measures or self._logs else None
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}-g"

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return LIVE

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.gateway.is_ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        await self._admitted(context, "ServerMetadata", None)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Ready when the model (version) serves; false when it failed to load or is loading;
        ``NOT_FOUND`` when this server was never asked to serve it."""
        await self._admitted(context, "ModelReady", request.name)
        try:
            self.gateway.deployment(request.name, request.version or None)
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        except DockyardError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """The served version's metadata (``UNAVAILABLE`` with the reason when it failed to
        load: the response has no field for a state)."""
        await self._admitted(context, "ModelMetadata", request.name)
        try:
            deployment = self.gateway.deployment(request.name, request.version or None)
            versions = [
                str(each.version.version) for each in self.gateway.deployments(request.name)
            ]
        except DockyardError as exc:
            await _abort(context, exc)
        signature = deployment.version.signature
        return pb.ModelMetadataResponse(
            name=deployment.name,
            versions=versions,
            platform=deployment.platform,
            inputs=[_tensor(spec) for spec in signature.inputs],
            outputs=[_tensor(spec) for spec in signature.outputs],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        started = perf_counter()
        metadata = _metadata(context)
        request_id = (
            metadata.get("x-request-id") or request.id or f"{self._id_prefix}{next(self._ids):x}"
        )
        CURRENT_REQUEST_ID.set(request_id)
        name = request.model_name
        number = request.model_version or None
        principal = OPEN
        try:
            principal = await self._authorized(context, metadata, "ModelInfer", name)
            deployment = self.gateway.deployment(name, number).answering()
            decoded = decode_request(request)
            remaining = context.time_remaining()
            try:
                async with asyncio.timeout(remaining):
                    deployment, result, _ = await predict_v2(
                        self.gateway, deployment, name, number, decoded
                    )
            except TimeoutError:
                raise PredictionTimeout(
                    f"the call's gRPC deadline ({remaining:.3g} s) passed before the prediction "
                    "finished"
                ) from None
            response = encode_response(
                model_name=deployment.name,
                model_version=str(deployment.version.version),
                request_id=request.id or None,
                outputs=result,
                raw=wants_raw(request, decoded),
            )
        except Exception as exc:
            error = answered_error(exc, request_id)
            self._failed(context, name, number, started, error, principal)
            await _abort(context, error)
        if self._monitor is not None:
            seconds = perf_counter() - started
            version = deployment.version
            if self._logs:
                self._monitor.observe(
                    ROUTE,
                    name,
                    version,
                    OK,
                    seconds,
                    None,
                    request_id,
                    principal.actor,
                    decoded.inputs,
                    result,
                )
            else:
                self._monitor.observe(ROUTE, name, version, OK, seconds, None, "", "", None, None)
        if self._access:
            _access("ModelInfer", OK, started, context, principal)
        return response

    async def _admitted(self, context: Context, method: str, model: str | None) -> Principal:
        """The caller of a method other than ``ModelInfer``, once allowed; the call is aborted
        with the refusal's status otherwise."""
        try:
            return await self._authorized(context, _metadata(context), method, model)
        except DockyardError as exc:
            await _abort(context, exc)

    async def _authorized(
        self, context: Context, metadata: Mapping[str, str], method: str, model: str | None
    ) -> Principal:
        """The principal of the call's credentials, allowed ``method`` (on ``model``) and under
        its rate limit; a refusal raises, recorded as a security event."""
        action = RPCS[method]
        if action is None or not self.auth.enabled:
            return OPEN
        token = credential(metadata.get("authorization"), metadata.get("x-api-key"))
        try:
            try:
                return self.auth.authorize(token, action, model)
            except Unauthenticated:
                if not await self.auth.reloaded_for(token):
                    raise
                return self.auth.authorize(token, action, model)
        except DockyardError as exc:
            self.auth.refused(exc, token, METHOD, SERVICE + method, context.peer() or "")
            raise

    def _failed(
        self,
        context: Context,
        name: str,
        number: str | None,
        started: float,
        error: DockyardError,
        principal: Principal,
    ) -> None:
        """Count a failed ``ModelInfer`` under the version that would have answered it, and
        write its access record."""
        status = error.http_status
        if self._access:
            _access("ModelInfer", status, started, context, principal)
        if self._monitor is None:
            return
        version = failed_version(self.gateway, name, number)
        seconds = perf_counter() - started
        kind = type(error).__name__
        self._monitor.observe(ROUTE, name, version, status, seconds, kind, "", "", None, None)


async def _abort(context: Context, answered: DockyardError) -> NoReturn:
    """End the call with the error's gRPC status and the message REST would send (``answered``:
    as ``failures.answered_error`` made it); a retry hint (``retry-after``, seconds) in the
    trailing metadata where REST sends ``Retry-After``."""
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(answered, RateLimited | NotReady):
        trailers = (("retry-after", str(max(1, round(answered.retry_after)))),)
    elif isinstance(answered, ModelCrashed):
        trailers = (("retry-after", "1"),)
    code = grpc.StatusCode[answered.grpc_status]
    await context.abort(code, public_message(answered.message), trailers)


def _metadata(context: Context) -> dict[str, str]:
    """The call's metadata that the service reads, by lower-case key (binary values skipped)."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in ("authorization", "x-api-key", "x-request-id") and isinstance(value, str):
            found[key] = value
    return found


def _tensor(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )


def _access(
    method: str, status: int, started: float, context: Context, principal: Principal
) -> None:
    seconds = perf_counter() - started
    access(METHOD, SERVICE + method, status, seconds, context.peer() or "", principal.actor)
