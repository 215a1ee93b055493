"""The gRPC server of one worker: grpcio's asyncio server on the worker's own event loop.

It is started and stopped by the app's lifespan, so it runs in every worker process beside
uvicorn and serves the same gateway, authenticator and monitor (``serving.grpc_service``). Each
worker binds the port itself with ``SO_REUSEPORT`` (the kernel spreads new connections over the
workers): a gRPC server cannot accept on a socket bound before the fork, as uvicorn does. ``serve``
checks the port is free before any worker starts (``reliability.supervisor.check_port``). When the
worker starts to drain, gRPC stops taking calls at the same moment as HTTP (``DRAINING``).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from dockyard.config import Settings
from dockyard.errors import Unavailable
from dockyard.reliability.supervisor import DRAINING
from dockyard.reliability.tls import TlsFiles, pem_identity
from dockyard.serving.grpc_service import InferenceService
from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)
UNLIMITED = -1


class GrpcFront:
    """The V2 gRPC service on ``settings.host``:``settings.grpc_port``, for one worker."""

    def __init__(self, settings: Settings, service: InferenceService) -> None:
        self.settings = settings
        self.service = service
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def address(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.settings.grpc_port}"

    async def start(self) -> None:
        """Bind and start serving (in the worker, on its running loop).

        Messages are capped at ``max_body_bytes`` (a larger one is refused by gRPC itself with
        ``RESOURCE_EXHAUSTED``), calls in progress at ``max_connections`` per worker (past it,
        ``RESOURCE_EXHAUSTED`` too); with ``tls_cert`` the port speaks TLS only, with
        ``tls_client_ca`` it requires client certificates signed by it."""
        settings = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", UNLIMITED),
            ],
            maximum_concurrent_rpcs=settings.max_connections,
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, server)
        identity = pem_identity(TlsFiles.of(settings))
        try:
            if identity is None:
                server.add_insecure_port(self.address)
            else:
                cert, key, client_ca = identity
                credentials = grpc.ssl_server_credentials(
                    [(key, cert)],
                    root_certificates=client_ca,
                    require_client_auth=client_ca is not None,
                )
                server.add_secure_port(self.address, credentials)
        except RuntimeError as exc:  # grpcio's "Failed to bind to address"
            raise Unavailable(f"cannot listen for gRPC on {self.address}: {exc}") from exc
        await server.start()
        self._server = server
        DRAINING.append(self.drain)
        logger.info("gRPC (Open Inference Protocol V2) on %s", self.address)

    def drain(self) -> None:
        """Refuse new calls from now on and let those in progress finish, at most
        ``drain_timeout_s`` (called as the worker starts to drain, beside uvicorn's drain)."""
        if self._server is not None and self._stopping is None:
            stopping = self._server.stop(self.settings.drain_timeout_s)
            self._stopping = asyncio.ensure_future(stopping)

    async def stop(self) -> None:
        """Drain (if the worker has not begun to) and wait until the calls are done."""
        self.drain()
        if self._stopping is not None:
            await self._stopping
        if self.drain in DRAINING:
            DRAINING.remove(self.drain)
        self._server = None
