"""The supervisor: forks N workers that share the socket `serve` bound, and replaces dead ones.

Models are loaded in the parent before the fork, so workers share their memory copy-on-write;
so is the TLS context, built and checked once before it. It is handed an app factory and never
imports the serving layer. Handed a ``follow`` callable too, it asks it every interval whether
the registry named other versions (loaded by it, here, in the parent, for the factory's next
workers); then it replaces the workers one at a time: a new one is forked and waited for until
it is ready, then the old one drains (``DrainingServer``) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import select
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

from dockyard.config import Settings
from dockyard.errors import Unavailable
from dockyard.reliability import logs
from dockyard.reliability.http_limits import HttpLimits, close_gently, limited_protocol
from dockyard.reliability.tls import TlsFiles, server_context

logger = logging.getLogger(__name__)

AppFactory = Callable[[], Any]
Follow = Callable[[], bool]
"""Loads what the registry names now when it moved; True when the factory's next workers serve
another set (the running ones must be replaced)."""
RESTART_BACKOFF_S = 0.5
STOP_MARGIN_S = 5.0
"""How much longer than the drain deadline a stopping worker gets before it is killed."""
READY_TIMEOUT_S = 60.0
"""How long a replacement worker may take to be ready before the replacement is given up."""
IDLE_GRACE_S = 1.0
"""How long a worker being replaced (``REPLACE_SIGNAL``) leaves its idle keep-alive connections
open: a client that sends on one meanwhile gets its answer with ``Connection: close`` rather than
a closed socket, and reconnects to another worker. A server that stops as a whole skips it: no
other worker would take the reconnection."""
REPLACE_SIGNAL = signal.SIGUSR1
"""What the supervisor sends a worker it replaces: stop as SIGTERM does, after the grace."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1
"""prctl(2)'s option: the signal this process gets when the thread that forked it ends."""
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


def check_port(host: str, port: int) -> None:
    """Raise Unavailable (one line, exit 7) when ``host:port`` cannot be bound now: for a server
    each worker binds itself later (gRPC, with ``SO_REUSEPORT``), checked before anything loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


@dataclass(frozen=True)
class ServerOptions:
    """How the server speaks on its socket: HTTP limits, and TLS when it has a certificate."""

    limits: HttpLimits = field(default_factory=HttpLimits)
    tls: ssl.SSLContext | None = None
    """Built (and its files checked) once, before workers are forked; None: plain HTTP."""
    drain_timeout_s: float = 30.0
    """How long a stopping server (or a worker being replaced) finishes its in-flight requests."""

    @classmethod
    def of(cls, settings: Settings) -> ServerOptions:
        """The options of these settings; raises InvalidInput naming a bad TLS file."""
        return cls(
            HttpLimits.of(settings),
            server_context(TlsFiles.of(settings)),
            settings.drain_timeout_s,
        )

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
        timeout_graceful_shutdown=max(1, math.ceil(options.drain_timeout_s)),
        ssl_context_factory=None if tls is None else (lambda config, default: tls),
    )


DRAINING: list[Callable[[], object]] = []
"""Called on the event loop when this process's server starts to drain, so the other servers on
its loop (the gRPC front) stop taking requests at the same moment as HTTP, not after it."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a gentler stop, and a word to the supervisor once it is ready.

    On SIGTERM it stops accepting, answers what is in progress with ``Connection: close``, lets
    uvicorn close the idle connections and wait for the rest (``drain_timeout_s``) and run the
    app's shutdown (the prediction log flushed). On ``REPLACE_SIGNAL`` it first keeps its open
    connections for up to ``IDLE_GRACE_S``, answering what arrives on them with ``Connection:
    close`` (the other workers accept the reconnections).
    """

    def __init__(self, config: uvicorn.Config, ready_fd: int | None = None) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd
        self._replaced = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, without raising the signal again once stopped: a drained stop is a clean
        exit (status 0), not a death by SIGTERM."""
        previous = signal.signal(REPLACE_SIGNAL, self._on_replace)
        try:
            with super().capture_signals():
                yield
                self._captured_signals.clear()
        finally:
            signal.signal(REPLACE_SIGNAL, previous)

    def _on_replace(self, signum: int, frame: FrameType | None) -> None:
        self._replaced = True
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._ready_fd is not None and self.started:
            os.write(self._ready_fd, b"r")
            os.close(self._ready_fd)
            self._ready_fd = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for draining in DRAINING:
            draining()
        connections = self.server_state.connections
        close_gently(connections)
        grace_s = 0.0
        if self._replaced:
            grace_s = min(IDLE_GRACE_S, self.config.timeout_graceful_shutdown or IDLE_GRACE_S)
        deadline = time.monotonic() + grace_s
        while connections and time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(0.05)
        await super().shutdown(sockets)


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
        follow: Follow | None = None,
        follow_interval_s: float = 2.0,
    ) -> None:
        """``follow`` (None: the workers keep what they were forked with) is called every
        ``follow_interval_s`` on this thread."""
        self._follow = follow
        self._follow_interval_s = follow_interval_s
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

    def _spawn(self, slot: int, sock: socket.socket, ready_fd: int | None = None) -> int:
        """Fork a worker for ``slot``; it writes a byte to ``ready_fd`` once it serves.

        SIGTERM and SIGINT are blocked across the fork until the worker has its own handlers:
        a stop sent in between would otherwise run the supervisor's handler, inherited, which
        only sets a flag in the worker's copy, and the worker would go on serving unowned (seen
        when a server was stopped while a follow swap was forking). The worker also dies with
        the supervisor (``_die_with_parent``), however the supervisor ends."""
        supervisor = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent(supervisor)
                logs.configure(self._log_level, self._log_format)  # the listener thread is new
                logs.flush_on(*STOP_SIGNALS)  # else: the default, dying at once
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a stop since the fork: now
                config = uvicorn_config(
                    self._factory(), self._host, self._port, self._log_level, self._options
                )
                DrainingServer(config, ready_fd).run(sockets=[sock])
            except BaseException:
                logger.exception("worker %d crashed", slot)
                code = 1
            finally:
                logs.shutdown()  # what is queued is written: os._exit runs no atexit hooks
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._children[pid] = slot
        logger.info("worker %d started (pid %d)", slot, pid)
        return pid

    def _followed(self, sock: socket.socket) -> None:
        """Ask ``follow``; when the next workers serve another set, replace the running ones."""
        assert self._follow is not None
        try:
            changed = self._follow()
        except Exception:  # the registry unreachable a moment: keep serving, try again
            logger.exception("following the registry failed; serving what is loaded")
            return
        if changed:
            self._replace_workers(sock)

    def _replace_workers(self, sock: socket.socket) -> None:
        """One at a time: fork the new worker, wait until it is ready, then drain the old one.
        A new worker that is not ready in time is killed and the old ones keep serving."""
        for pid, slot in list(self._children.items()):
            if self._stopping:
                return
            read_end, write_end = os.pipe()
            try:
                new = self._spawn(slot, sock, write_end)
            finally:
                os.close(write_end)
            try:
                ready = self._wait_ready(new, read_end)
            finally:
                os.close(read_end)
            if not ready:
                if not self._stopping:  # else: the server is stopping, the swap with it
                    logger.error(
                        "worker %d (pid %d) did not get ready; keeping the others", slot, new
                    )
                self._children.pop(new, None)
                self._stop([new])
                return
            if self._children.pop(pid, None) is not None:
                self._stop([pid], REPLACE_SIGNAL)
        logger.info("every worker serves the registry's new versions")

    def _wait_ready(self, pid: int, read_end: int) -> bool:
        """Whether worker ``pid`` said it is ready before it exited or the deadline passed."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0 and not self._stopping:
            readable, _, _ = select.select([read_end], [], [], min(remaining, 0.1))
            if readable:
                return os.read(read_end, 1) == b"r"
            if _exited(pid) is not None:
                return False
        return False

    def _watch(self, sock: socket.socket) -> None:
        """Replace each worker that exits. Only the workers are waited for: ``serve``'s other
        children (the monitoring process) have a watcher of their own."""
        next_follow = time.monotonic() + self._follow_interval_s
        while not self._stopping:
            if self._follow is not None and time.monotonic() >= next_follow:
                self._followed(sock)
                next_follow = time.monotonic() + self._follow_interval_s
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
        self._stop(list(self._children))
        self._children.clear()

    def _stop(self, pids: list[int], signum: int = signal.SIGTERM) -> None:
        """``signum``: each drains (finishes its in-flight requests, flushes its log) and exits;
        SIGKILL for those still there past the drain deadline."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        drain_s = (
            self._options.drain_timeout_s if self._options else ServerOptions().drain_timeout_s
        )
        deadline = time.monotonic() + drain_s + STOP_MARGIN_S
        left = set(pids)
        while left and time.monotonic() < deadline:
            left = {pid for pid in left if _exited(pid) is None}
            time.sleep(0.05)
        for pid in left:
            logger.error("worker (pid %d) did not stop within %g s; killing it", pid, drain_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _exited(pid: int) -> int | None:
    """The wait status of child ``pid`` once it has exited (reaped here), else None. A child
    already reaped reads as exited (status -1)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return status if done else None


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when its supervisor ends, even by SIGKILL
    (Linux's ``PR_SET_PDEATHSIG``; elsewhere nothing), and exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(0)
