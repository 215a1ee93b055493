"""Servers under test, each a subprocess on a free loopback port, always stopped after its runs.

A server runs in its own session (process group) so that stopping it also stops its workers.
Dockyard requires an API key on every route but the health probes: its spec carries one, and every
request sent to it (readiness aside) carries ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.01


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server; ``{port}`` in the command and environment is the HTTP port."""

    label: str
    command: list[str]
    infer_path: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/v2/health/ready"
    api_key: str | None = None
    """Sent as ``Authorization: Bearer`` with every request (Dockyard's; None for the others)."""

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header value for this server's requests, if it needs one."""
        return f"Bearer {self.api_key}" if self.api_key else None


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def dockyard_spec(
    home: Path,
    ref: str,
    *,
    workers: int | None = 1,
    batching: bool = True,
    label: str = "dockyard",
    executable: Path | None = None,
    model_options: tuple[str, ...] = (),
    beside: tuple[str, ...] = (),
    api_key: str | None = None,
    auth: bool = True,
    env: dict[str, str] | None = None,
) -> ServerSpec:
    """``dockyard serve ref [beside…]``, load sent to ``ref``; ``workers=None`` leaves the default
    (one per core). Nothing is set in the environment but the home (and ``env``, when given):
    Dockyard runs as users run it, auth on (its default; ``auth=False`` adds ``--no-auth``), and
    requests carry ``api_key``, a key of ``home``.
    """
    name = ref.split(":")[0].split("@")[0]
    return ServerSpec(
        label=label,
        command=[
            str(executable or Path(sys.executable).parent / "dockyard"),
            "serve",
            ref,
            *beside,
            "--port",
            "{port}",
            *(("--workers", str(workers)) if workers is not None else ()),
            "--batching" if batching else "--no-batching",
            "--log-level",
            "warning",
            *(f"--model-option={option}" for option in model_options),
            *(() if auth else ("--no-auth",)),
        ],
        infer_path=f"/v2/models/{name}/infer",
        workers=workers or len(os.sched_getaffinity(0)),
        env={"DOCKYARD_HOME": str(home), **(env or {})},
        api_key=api_key,
    )


def reference_spec(
    script: str, label: str, model_file: Path, *, workers: int | None = 1
) -> ServerSpec:
    """``bare_asgi.py``, ``fastapi_endpoint.py`` or ``ray_serve_plain.py`` (``workers=None``: it
    takes no ``--workers``) serving ``model_file``."""
    return ServerSpec(
        label=label,
        command=[
            sys.executable,
            str(BENCH_DIR / script),
            str(model_file),
            "--port",
            "{port}",
            *(("--workers", str(workers)) if workers is not None else ()),
        ],
        infer_path="/v2/models/model/infer",
        workers=workers or 1,
    )


def mlserver_spec(mlserver: Path, repository: Path, model: str, label: str) -> ServerSpec:
    return ServerSpec(
        label=label,
        command=[str(mlserver), "start", str(repository)],
        infer_path=f"/v2/models/{model}/infer",
        env={
            "MLSERVER_HOST": HOST,
            "MLSERVER_HTTP_PORT": "{port}",
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
        },
        ready_path=f"/v2/models/{model}/ready",
    )


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 10.0,
    *,
    authorization: str | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body); ``authorization`` is the header's value
    (``ServerSpec.authorization``)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if authorization:
            headers["Authorization"] = authorization
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(server: RunningServer, timeout: float = READY_TIMEOUT_S) -> float:
    """Poll the ready path until it answers 200; return the seconds since the process started."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.spec.label} exited with {server.process.returncode} before it was "
                f"ready; its log ({server.log}) ends:\n{tail(server.log)}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(
                server.port,
                "GET",
                server.spec.ready_path,
                timeout=1.0,
                authorization=server.spec.authorization,
            )
            if status == 200:
                return time.monotonic() - started
        time.sleep(POLL_S)
    raise RuntimeError(
        f"{server.spec.label} not ready in {timeout:g} s; its log ends:\n{tail(server.log)}"
    )


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(spec: ServerSpec, logs: Path) -> Iterator[RunningServer]:
    """Start ``spec``, wait until it is ready, and stop it (and its workers) on the way out."""
    server = start(spec, logs)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)


def start(spec: ServerSpec, logs: Path) -> RunningServer:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{spec.label}-w{spec.workers}-{port}.log"
    env = {**os.environ, **{k: v.format(port=port) for k, v in spec.env.items()}}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [part.format(port=port) for part in spec.command],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return RunningServer(spec, port, process, log)


def stop(server: RunningServer) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after a grace period."""
    group = server.process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=STOP_TIMEOUT_S)
