"""``dockyard capacity MODEL --p99 50ms --target 2000rps``: measure what one local worker sustains
within a p99 limit and say how many workers, cores and replicas a target throughput needs.

It starts ``dockyard serve MODEL --workers 1`` itself, on a free port of 127.0.0.1 only, with API
keys required: a temporary predictor key for this model alone (its own high rate limit, so a
configured limit does not cap the measurement; expiring in an hour should this process be
killed) is created in the home's key table before, and revoked after. Nobody else on the machine
can use the server meanwhile, as anyone could with ``--no-auth``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from dockyard.services.workspace import Workspace

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
KEY_LIFETIME = timedelta(hours=1)
KEY_RATE = "1000000/s"
LOG_TAIL_CHARS = 2000


def capacity(
    model: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION.")],
    p99: Annotated[str, typer.Option("--p99", help="The p99 latency limit, such as 50ms.")],
    target: Annotated[
        str, typer.Option("--target", help="The throughput to plan for, such as 2000rps.")
    ],
    version: Annotated[
        int | None, typer.Option("--version", help="The version (default: as NAME resolves).")
    ] = None,
    duration: Annotated[str, typer.Option("--duration", help="Length of each stage.")] = "5s",
    start_rate: Annotated[
        str, typer.Option("--start-rate", help="The first stage's rate.")
    ] = "50rps",
    growth: Annotated[
        float, typer.Option("--growth", help="Each stage's rate over the last one's.", min=1.1)
    ] = 2.0,
    max_rate: Annotated[
        str, typer.Option("--max-rate", help="The highest rate tried.")
    ] = "50000rps",
    repeats: Annotated[
        int, typer.Option("--repeats", help="Runs of the best rate (their spread).", min=1)
    ] = 2,
    rows: Annotated[int, typer.Option("--rows", help="Rows per request.", min=1)] = 1,
    cores_per_replica: Annotated[
        int | None,
        typer.Option(
            "--cores-per-replica", help="Cores of one machine (default: this one's).", min=1
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    home: HomeOption = None,
) -> None:
    """Measure one local worker with rising open-loop rates until p99 passes the limit or it
    saturates; recommend workers, cores and replicas for the target throughput."""
    from dockyard.loadtest.capacity import Search, measure, plan
    from dockyard.loadtest.units import parse_latency_ms, parse_rate, parse_seconds
    from dockyard.registry.refs import parse_ref

    search = Search(
        p99_limit_ms=parse_latency_ms(p99),
        start_rps=parse_rate(start_rate, "--start-rate"),
        growth=growth,
        max_rps=parse_rate(max_rate, "--max-rate"),
        duration_s=parse_seconds(duration),
        timeout_s=max(1.0, 20 * parse_latency_ms(p99) / 1000),
        max_in_flight=256,
        repeats=repeats,
    )
    target_rps = parse_rate(target)
    ref = parse_ref(model)
    if version is not None:
        if ref.alias is not None or ref.version is not None:
            raise InvalidInput(f"give {model} or --version {version}, not both")
        ref = parse_ref(f"{ref.name}:{version}")
    workspace = open_workspace(home)
    served = workspace.store.resolve(ref)
    cores = cores_per_replica or os.cpu_count() or 1
    with _temporary_key(workspace, served.model) as key, _server(workspace, served.ref) as url:
        from dockyard.loadtest.connections import encode_requests
        from dockyard.loadtest.runner import run_async
        from dockyard.loadtest.sources import choose_bodies
        from dockyard.loadtest.target import Target

        remote = Target(url, served.model, str(served.version), key)
        bodies, source = choose_bodies(remote, None, rows)
        requests = encode_requests(remote, bodies)
        if json_output:
            measured = run_async(lambda: measure(remote, requests, search))
        else:
            from dockyard.loadtest.progress import LiveDisplay

            with LiveDisplay() as display:
                measured = run_async(lambda: measure(remote, requests, search, display))
    rates = ", ".join(stage.label for stage in measured.stages)
    how = (
        f"measured {served.ref} on `dockyard serve --workers 1` at {url} with open-loop stages "
        f"of {search.duration_s:g} s ({rates}), {rows} row(s) a request from its {source}; the "
        f"load generator shared this machine's {os.cpu_count()} cores"
    )
    result = plan(
        measured,
        target_rps=target_rps,
        p99_limit_ms=search.p99_limit_ms,
        cores_per_replica=cores,
        how=how,
    )
    if json_output:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(result.summary)
    for note in result.notes:
        typer.echo(f"  {note}")


@contextmanager
def _temporary_key(workspace: Workspace, model: str) -> Iterator[str]:
    """A predictor key for ``model`` alone, revoked when the measurement ends."""
    from dockyard.security.principals import Role, local_user

    record, key = workspace.keys.create(
        local_user(), f"capacity-{os.getpid()}", Role.PREDICTOR, [model], KEY_LIFETIME, KEY_RATE
    )
    try:
        yield key
    finally:
        workspace.keys.revoke(local_user(), record.key_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(workspace: Workspace, ref: str) -> Iterator[str]:
    """``dockyard serve REF --workers 1`` on a free loopback port, keys required; its URL once
    it is ready. Stopped (SIGTERM, then SIGKILL) when the block ends."""
    port = _free_port()
    home = str(workspace.settings.home)
    command = [
        sys.executable, "-m", "dockyard.cli.main", "serve", ref, "--workers", "1",
        "--host", LOOPBACK, "--port", str(port), "--auth", "--home", home,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://{LOOPBACK}:{port}"
            _wait_ready(process, url, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: IO[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-LOG_TAIL_CHARS:].strip()
            raise Unavailable(f"dockyard serve exited with code {process.returncode}: {tail}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise Unavailable(f"dockyard serve was not ready within {STARTUP_TIMEOUT_S:g} s")
