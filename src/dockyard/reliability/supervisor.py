"""The supervisor: forks N workers that share the socket `serve` bound, and replaces dead ones.

Models are loaded in the parent before the fork, so workers share their memory copy-on-write;
so is the TLS context, built and checked once before it. It is handed an app factory and never
imports the serving layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

from dockyard.config import Settings
from dockyard.errors import Unavailable
from dockyard.reliability import logs
from dockyard.reliability.http_limits import HttpLimits, limited_protocol
from dockyard.reliability.tls import TlsFiles, server_context

logger = logging.getLogger(__name__)

AppFactory = Callable[[], Any]
RESTART_BACKOFF_S = 0.5
STOP_TIMEOUT_S = 15.0
_server: str | None = None


def server_token() -> str:
    """``<pid>-<start>`` of the process that serves on the socket: the supervisor's in every
    worker it forks (restarted ones too), else this process's own; new on every start. Workers
    name what they share with it (the metrics folder: ``<pid>-…`` under the home's ``tmp``, swept
    once that process is gone)."""
    global _server
    if _server is None:
        _server = f"{os.getpid()}-{time.time_ns():x}"
    return _server


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` once, before anything loads (a port already taken is one line and
    exit 7, not a banner and then a crash); every worker accepts on this socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class ServerOptions:
    """How the server speaks on its socket: HTTP limits, and TLS when it has a certificate."""

    limits: HttpLimits = field(default_factory=HttpLimits)
    tls: ssl.SSLContext | None = None
    """Built (and its files checked) once, before workers are forked; None: plain HTTP."""

    @classmethod
    def of(cls, settings: Settings) -> ServerOptions:
        """The options of these settings; raises InvalidInput naming a bad TLS file."""
        return cls(HttpLimits.of(settings), server_context(TlsFiles.of(settings)))

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def uvicorn_config(
    app: Any, host: str, port: int, log_level: str, options: ServerOptions | None = None
) -> uvicorn.Config:
    """The one uvicorn configuration: uvloop, httptools with head limits, request deadlines and a
    connection cap (``http_limits``), TLS when set, no WebSocket (no route takes one), no access
    log of uvicorn's (Dockyard writes its own, ``access_log``), and no logging configuration of
    uvicorn's: its records go through ``reliability.logs``."""
    options = options or ServerOptions()
    tls = options.tls
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=limited_protocol(options.limits),
        ws="none",
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        ssl_context_factory=None if tls is None else (lambda config, default: tls),
    )


class Supervisor:
    """Forks workers serving the app from ``factory`` on a shared socket; restarts dead ones."""

    def __init__(
        self,
        factory: AppFactory,
        sock: socket.socket,
        host: str,
        port: int,
        workers: int,
        log_level: str,
        options: ServerOptions | None = None,
        *,
        log_format: str = "text",
    ) -> None:
        self._factory = factory
        self._sock = sock
        self._host = host
        self._port = port
        self._count = workers
        self._log_level = log_level
        self._options = options
        self._log_format = log_format
        self._children: dict[int, int] = {}
        self._stopping = False

    def run(self) -> None:
        sock = self._sock
        server_token()  # fixed here, before the fork, so every worker shares it
        previous = {
            sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in range(self._count):
                self._spawn(slot, sock)
            self._watch(sock)
        finally:
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _spawn(self, slot: int, sock: socket.socket) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                logs.configure(self._log_level, self._log_format)  # the listener thread is new
                logs.flush_on(signal.SIGTERM, signal.SIGINT)  # else: the default, dying at once
                config = uvicorn_config(
                    self._factory(), self._host, self._port, self._log_level, self._options
                )
                uvicorn.Server(config).run(sockets=[sock])
            except BaseException:
                logger.exception("worker %d crashed", slot)
                code = 1
            finally:
                logs.shutdown()  # what is queued is written: os._exit runs no atexit hooks
                os._exit(code)
        self._children[pid] = slot
        logger.info("worker %d started (pid %d)", slot, pid)

    def _watch(self, sock: socket.socket) -> None:
        """Replace each worker that exits. Only the workers are waited for: ``serve``'s other
        children (the monitoring process) have a watcher of their own."""
        while not self._stopping:
            exited = [
                (pid, status)
                for pid in list(self._children)
                if (status := _exited(pid)) is not None
            ]
            if not exited:
                time.sleep(0.1)
                continue
            for pid, status in exited:
                slot = self._children.pop(pid)
                if self._stopping:
                    break
                logger.warning(
                    "worker %d (pid %d) exited with status %d; starting a new one",
                    slot,
                    pid,
                    status,
                )
                time.sleep(RESTART_BACKOFF_S)
                self._spawn(slot, sock)

    def _stop_children(self) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._children and time.monotonic() < deadline:
            for pid in [pid for pid in self._children if _exited(pid) is not None]:
                del self._children[pid]
            time.sleep(0.05)
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _exited(pid: int) -> int | None:
    """The wait status of child ``pid`` once it has exited (reaped here), else None. A child
    already reaped reads as exited (status -1)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return status if done else None
