"""Real ``dockyard serve`` processes on free loopback ports, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 60.0
MONITORING_STARTED = re.compile(r"monitoring process started \(pid (\d+)\)")


def children(pid: int) -> list[int]:
    """The processes ``pid`` forked, from any of its threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``: its children, theirs, and so on."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        try:
            below = children(todo.pop())
        except FileNotFoundError:  # it ended meanwhile
            continue
        todo += [child for child in below if child not in found]
        found.update(below)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dockyard_command() -> list[str]:
    """The installed console script, run with this interpreter's environment."""
    return [str(Path(sys.executable).parent / "dockyard")]


class Server:
    """A real ``dockyard serve`` process on a free port.

    With ``tls`` (a client context: the CA to trust, a client certificate for mutual TLS) it is
    an HTTPS server, and the readiness probe goes through that context.
    """

    def __init__(
        self,
        home: Path,
        args: list[str],
        log: Path,
        *,
        tls: ssl.SSLContext | None = None,
        auth: bool = False,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        grpc: bool = False,
    ) -> None:
        """``auth`` False starts it with ``--no-auth`` (tests of other things); True keeps the
        default, API keys required, and ``admin_key`` reads the first admin key. ``env``: the
        environment it runs with (default this process's), ``DOCKYARD_HOME`` set to ``home``.
        ``grpc``: serve gRPC too, on another free port (``grpc_address``)."""
        self.home = home
        if not auth:
            args = [*args, "--no-auth"]
        self.port = port or free_port()
        self.grpc_address = ""
        if grpc:
            grpc_port = free_port()
            self.grpc_address = f"127.0.0.1:{grpc_port}"
            args = [*args, "--grpc-port", str(grpc_port)]
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log = log
        self.startup_timeout_s = startup_timeout_s
        env = {**(os.environ if env is None else env), "DOCKYARD_HOME": str(home)}
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [*dockyard_command(), "serve", *args, "--port", str(self.port)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                ready = httpx.get(f"{self.url}/v2/health/ready", timeout=1, verify=self.tls or True)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"server not ready in {self.startup_timeout_s} s:\n{self.log.read_text()}"
        )

    @property
    def admin_key(self) -> str:
        """The admin key the server created on its first secured start."""
        return (self.home / "secrets" / "admin-key").read_text().strip()

    def output(self) -> str:
        return self.log.read_text()

    def output_with(self, text: str, timeout_s: float = 10.0) -> str:
        """The output once it holds ``text``: log records reach it from a worker's logging
        thread, after the answer that caused them may already be back."""
        deadline = time.monotonic() + timeout_s
        while text not in (output := self.output()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return output

    def monitoring(self) -> list[int]:
        """Every monitoring process the server said it started, the newest last."""
        return [int(pid) for pid in MONITORING_STARTED.findall(self.output())]

    def workers(self) -> list[int]:
        """The serving workers: the children of ``serve`` but its monitoring process (a worker
        forks no further children here unless a model is isolated)."""
        monitoring = set(self.monitoring())
        return [pid for pid in children(self.process.pid) if pid not in monitoring]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
