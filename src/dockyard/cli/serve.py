"""``dockyard serve``: load models and serve them over HTTP (V2, V1, docs)."""

from __future__ import annotations

import gc
from typing import Annotated

import typer
import uvicorn
from starlette.types import ASGIApp
from threadpoolctl import threadpool_limits

from dockyard.cli.options import HomeOption, settings_from
from dockyard.errors import InvalidInput
from dockyard.registry.refs import parse_ref
from dockyard.reliability.http_limits import HttpLimits
from dockyard.reliability.supervisor import Supervisor, uvicorn_config
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.gateway import build_local_gateway, default_refs


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="NAME[@ALIAS|:VERSION] … (default: every model's production alias)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes sharing the port and model memory (0: one per core)."),
    ] = None,
    model_threads: Annotated[
        int | None, typer.Option(help="OpenMP/BLAS threads per worker (0: cores / workers - 1).")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most rows in one batch.")] = None,
    max_delay_ms: Annotated[
        float | None, typer.Option(help="Wait up to this long for a fuller batch (default 0).")
    ] = None,
    batching: Annotated[
        bool | None, typer.Option("--batching/--no-batching", help="Adaptive batching.")
    ] = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option(help="MODEL.SETTING=VALUE per-model batching/timeout override, repeatable."),
    ] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body.")] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            help="Host names to answer to besides IP addresses, localhost and --host "
            "(comma-separated; *.example.com for subdomains, * for any)."
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    home: HomeOption = None,
) -> None:
    """Serve models over the Open Inference Protocol (V2) and KServe V1."""
    settings = settings_from(
        home=home,
        host=host,
        port=port,
        workers=workers,
        model_threads=model_threads,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        batching=batching,
        max_body_bytes=max_body_bytes,
        allowed_hosts=allowed_hosts,
        log_level=log_level,
        model_options=model_option,
    )
    workspace = Workspace.open(settings)
    refs = [parse_ref(text) for text in models] if models else default_refs(workspace)
    gateway = build_local_gateway(workspace, refs)
    served = ", ".join(
        f"{d.version.ref}" for name in gateway.model_names() for d in gateway.deployments(name)
    )
    workers = settings.effective_workers()
    if workers > 1 and (unsafe := gateway.fork_unsafe()):
        gateway.close()
        raise InvalidInput(
            f"{', '.join(unsafe)} run on a GPU, whose context cannot be shared by forked workers; "
            "serve them with --workers 1"
        )
    typer.echo(
        f"serving {served} on http://{settings.host}:{settings.port} with {workers} "
        f"worker{'s' if workers > 1 else ''} (docs at /docs)"
    )
    # Models and imports are loaded for good: move them out of the garbage collector's sight, so
    # its full passes stay short (tail latency) and do not touch pages forked workers share.
    gc.collect()
    gc.freeze()
    # OpenMP and BLAS default to one thread per core in every process; N workers would then run
    # N x cores threads that spin against each other (tree ensembles collapse under it).
    threadpool_limits(limits=settings.effective_model_threads())
    try:
        if workers == 1:
            gateway.start()
            config = uvicorn_config(
                create_app(settings, gateway, workspace),
                settings.host,
                settings.port,
                settings.log_level,
                HttpLimits.of(settings),
            )
            uvicorn.Server(config).run()
        else:

            def worker_app() -> ASGIApp:
                workspace.after_fork()
                gateway.start()
                return create_app(settings, gateway, workspace)

            Supervisor(
                worker_app,
                settings.host,
                settings.port,
                workers,
                settings.log_level,
                HttpLimits.of(settings),
            ).run()
    finally:
        gateway.close()
