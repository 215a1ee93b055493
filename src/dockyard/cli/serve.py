"""``dockyard serve``: load models and serve them over HTTP (V2, V1, docs).

Every command (and ``--help``) imports this module: the server's own modules (uvicorn, the ASGI
app, the registry, ...) are imported when ``serve`` runs.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, settings_from
from dockyard.config import Settings
from dockyard.errors import InvalidInput

if TYPE_CHECKING:
    import socket
    from datetime import timedelta

    from starlette.types import ASGIApp

    from dockyard.reliability.supervisor import ServerOptions
    from dockyard.services.workspace import Workspace

logger = logging.getLogger(__name__)


GC_YOUNG_THRESHOLD = 20_000
"""Tracked objects a serving process allocates (net of those freed) before the collector's
youngest pass; Python's default is 700. At 64 connections a worker holds about a thousand young
objects in flight, and its prediction log three per queued request until its writer builds them
(at most a slice of 1,024 requests and a tenth of a second's: under 7,000 objects at 14,000
req/s, where a whole second's, held to each flush, would pass this threshold): at 700
the collector ran about 60 times a second, each pass promoting live request objects for the older
passes to scan again (a full pass every second or two, 25-50 ms on the event loop). At 20,000 no
pass runs while serving the small model at 64 connections with every request logged (gc
callbacks in the worker), which served 4,419 req/s against 4,050 at 700 (three runs each,
interleaved). Garbage in reference cycles still goes at the next pass: a few MB at most."""


def settle_heap() -> None:
    """Collect, then move everything alive now (models, imports) out of the collector's sight,
    so its passes stay short (tail latency) and do not touch pages forked workers share; and
    let it run only past ``GC_YOUNG_THRESHOLD`` new objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_no_auth(settings: Settings) -> None:
    """Refuse ``--no-auth`` off loopback; warn about it on loopback."""
    if settings.auth:
        return
    if not is_loopback(settings.host):
        raise InvalidInput(
            f"--no-auth is accepted only on a loopback address, not {settings.host}: "
            "anyone who reaches the port could register models and move aliases"
        )
    logger.warning("authentication is off (--no-auth): every local caller is admin")


def _check_auth_sources(settings: Settings) -> None:
    """Check what each worker will read for auth before any worker exists: a malformed rate limit
    or a JWKS that cannot be read stops the start with one line, instead of workers that crash
    and restart."""
    from dockyard.security.ratelimit import parse_limits

    parse_limits(settings.rate_limits)
    if settings.auth and settings.jwt_jwks:
        from dockyard.security.tokens import JwtVerifier  # PyJWT only when tokens are on

        JwtVerifier.from_settings(settings, refresh_in_background=False)


def _workers(settings: Settings) -> int:
    """Worker processes to run: with the ray backend one (the replicas scale, on the cluster; a
    process joined to Ray cannot be forked into more)."""
    if settings.backend != "ray":
        return settings.effective_workers()
    if settings.workers > 1:
        raise InvalidInput(
            f"the ray backend serves from one process (--workers {settings.workers} asked for "
            "more): scale its models with replicas ([models.NAME] min_replicas, max_replicas), "
            "or run more servers in front of the same Ray cluster"
        )
    return 1


def _say(settings: Settings, text: str) -> None:
    """A line for the user: printed, or a log record when the logs are JSON lines (so that every
    line the server writes is one)."""
    if settings.log_format == "json":
        logger.info("%s", text)
    else:
        typer.echo(text)


def _announce_keys(workspace: Workspace) -> None:
    """On the first secured run, create the admin key and say where it is."""
    from dockyard.services.bootstrap import admin_key_path, ensure_admin_key

    if not workspace.settings.auth:
        return
    created = ensure_admin_key(workspace)
    if created is not None:
        _say(
            workspace.settings,
            f"created the first admin API key in {created} (mode 0600); use it with: "
            f"export DOCKYARD_API_KEY=$(cat {created})",
        )
    elif admin_key_path(workspace).is_file():
        path = admin_key_path(workspace)
        _say(workspace.settings, f"API keys required; the first admin key is in {path}")


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="NAME[@ALIAS|:VERSION] … (default: every model's production alias)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve the Open Inference Protocol over gRPC on this port, from every "
            "worker (extra grpc; default off)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes sharing the port and model memory (0: one per core)."),
    ] = None,
    model_threads: Annotated[
        int | None, typer.Option(help="OpenMP/BLAS threads per worker (0: cores / workers - 1).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="local (models in the serving processes) or ray (Ray Serve replicas; extra ray)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The ray backend's cluster: HOST:PORT, auto or ray://HOST:PORT (default: a Ray "
            "instance of this server's own, on 127.0.0.1)."
        ),
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
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require an API key on every route but the health probes (--no-auth: only on a "
            "loopback address).",
        ),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="PEM certificate chain: serve HTTPS.")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    tls_client_ca: Annotated[
        str | None, typer.Option(help="PEM CA bundle: require client certificates (mutual TLS).")
    ] = None,
    require_signed: Annotated[
        bool | None,
        typer.Option(
            "--require-signed", help="Serve only versions with a valid Ed25519 signature."
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help="text (a line a record) or json (JSON lines), uvicorn's records too."),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one record per request (method, path, status, duration, request id).",
        ),
    ] = None,
    traces: Annotated[
        bool | None,
        typer.Option(
            "--traces/--no-traces",
            help="Send OpenTelemetry traces (request, batch, predict spans) over OTLP/HTTP to "
            "DOCKYARD_OTLP_ENDPOINT (extra otel).",
        ),
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="Swap in the versions the registry's aliases and rollouts name while serving "
            "(--no-follow: keep what was loaded at start).",
        ),
    ] = None,
    backup_every: Annotated[
        str | None,
        typer.Option(help="Back the home up this often while serving (1h, 30m; default never)."),
    ] = None,
    backup_keep: Annotated[
        int | None, typer.Option(help="Scheduled backups to keep (default 24).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Serve models over the Open Inference Protocol (V2: REST, and gRPC with --grpc-port) and
    KServe V1."""
    from dockyard.governance.policy import Policy
    from dockyard.governance.privacy import personal_data_rules
    from dockyard.monitoring.alerts import check_alerting
    from dockyard.reliability import logs
    from dockyard.reliability.supervisor import ServerOptions, bind_socket
    from dockyard.security.keystore import parse_duration

    settings = settings_from(
        home=home,
        host=host,
        port=port,
        grpc_port=grpc_port,
        workers=workers,
        model_threads=model_threads,
        backend=backend,
        ray_address=ray_address,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        batching=batching,
        max_body_bytes=max_body_bytes,
        allowed_hosts=allowed_hosts,
        auth=auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        require_signed=require_signed,
        log_level=log_level,
        log_format=log_format,
        access_log=access_log,
        traces=traces,
        model_options=model_option,
        follow_registry=follow,
        backup_every=backup_every,
        backup_keep=backup_keep,
    )
    logs.configure(settings.log_level, settings.log_format)
    _check_no_auth(settings)
    _check_auth_sources(settings)
    check_alerting(settings)  # alert rules and webhook: one line now, not a worker crash loop
    Policy.of(settings)  # the [governance] table, likewise
    personal_data_rules(settings)
    if settings.traces:  # the otel extra missing: one line now, not a worker crash loop
        from dockyard.monitoring.tracing import check_installed

        check_installed()
    if settings.backend == "ray":  # the ray extra missing: one line now, before any model loads
        from dockyard.scaling.ray_cluster import import_ray

        import_ray(settings.ray_address)
    if settings.backup_every:  # a bad --backup-every: one line now, not a log record later
        try:
            parse_duration(settings.backup_every)
        except InvalidInput as exc:
            raise InvalidInput(f"backup_every: {exc.message}") from None
    if settings.prediction_log_url:  # boto3 missing: one line now, not a log record later
        from dockyard.monitoring.predlog.bucket import LogBucket

        LogBucket.from_settings(settings)
    options = ServerOptions.of(settings)  # checks the TLS files, once, before anything loads
    if settings.grpc_port:  # grpcio missing or the port taken: one line now, not in each worker
        _check_grpc(settings)
    sock = bind_socket(settings.host, settings.port)
    try:
        _serve_on(sock, settings, options, models)
    finally:
        sock.close()


def _check_grpc(settings: Settings) -> None:
    """The gRPC front can start: grpcio is installed and ``grpc_port`` is free."""
    from dockyard.errors import MissingExtra
    from dockyard.reliability.supervisor import check_port

    try:
        import grpc  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("grpcio", "grpc") from exc
    check_port(settings.host, settings.grpc_port)


def _serve_on(
    sock: socket.socket, settings: Settings, options: ServerOptions, models: list[str] | None
) -> None:
    """Load the models and serve them on ``sock`` (bound already) with one worker or many; the
    workspace is closed however serving ends (a model that cannot load included)."""
    from dockyard.governance.retention import retention_period
    from dockyard.services.workspace import Workspace

    retention = retention_period(settings)  # a mistake stops serve before any model loads
    with Workspace.open(settings) as workspace:
        _serve_workspace(workspace, sock, settings, options, models, retention)


def _serve_workspace(
    workspace: Workspace,
    sock: socket.socket,
    settings: Settings,
    options: ServerOptions,
    models: list[str] | None,
    retention: timedelta | None,
) -> None:
    from threadpoolctl import threadpool_limits

    from dockyard.monitoring.metrics import metrics_folder
    from dockyard.monitoring.scheduler import MonitorScheduler
    from dockyard.registry.refs import parse_ref
    from dockyard.reliability.backup_schedule import backup_schedule
    from dockyard.reliability.log_shipping import log_shipping
    from dockyard.reliability.monitor_process import BackgroundJob, MonitorProcess
    from dockyard.reliability.rollout_watch import rollout_watch
    from dockyard.reliability.supervisor import (
        DrainingServer,
        Supervisor,
        server_token,
        uvicorn_config,
    )
    from dockyard.serving.app import create_app
    from dockyard.serving.auth import authenticator_for
    from dockyard.serving.follow import Follower, LoopFollower
    from dockyard.serving.gateway import build_local_gateway
    from dockyard.serving.warmup import warm_here, warm_in_child, warm_quietly

    refs = [parse_ref(text) for text in models] if models else None
    workers = _workers(settings)
    follower = Follower(workspace, refs) if settings.follow_registry else None
    if follower is not None:
        follower.moved()  # the audit head before loading: a move meanwhile is followed
    # OpenMP and BLAS default to one thread per core in every process; N workers would then run
    # N x cores threads that spin against each other (tree ensembles collapse under it).
    threadpool_limits(limits=settings.effective_model_threads())
    # One worker warms a new version in its own process; a supervisor tries it in a throwaway
    # child (it never predicts itself: its models are shared by the workers it forks).
    warm = warm_here if workers == 1 else warm_in_child
    gateway = build_local_gateway(workspace, refs, warm)
    if follower is not None:
        follower.started(gateway)
    served = ", ".join(
        f"{d.version.ref}" for name in gateway.model_names() for d in gateway.deployments(name)
    )
    if workers > 1 and (unsafe := gateway.fork_unsafe()):
        gateway.close()
        raise InvalidInput(
            f"{', '.join(unsafe)} run on a GPU, whose context cannot be shared by forked workers; "
            "serve them with --workers 1"
        )
    _announce_keys(workspace)
    _say(
        settings,
        f"serving {served} on {options.scheme}://{settings.host}:{settings.port} with {workers} "
        f"worker{'s' if workers > 1 else ''} (docs at /docs)"
        + (f"; gRPC on {settings.host}:{settings.grpc_port}" if settings.grpc_port else ""),
    )
    settle_heap()
    served_versions = gateway.served_versions()
    metrics = metrics_folder(workspace.home, server_token()) if settings.metrics else None

    def monitoring_jobs() -> list[BackgroundJob]:
        sock.close()  # it serves no request: the socket stays the workers' alone
        workspace.after_fork()
        # A following server's versions change: the scheduler asks the registry as it does.
        versions = follower.served_versions if follower is not None else lambda: served_versions
        scheduler = MonitorScheduler(
            workspace.home, workspace.store, settings, versions, metrics, retention
        )
        return [
            scheduler,
            *rollout_watch(workspace, settings, metrics),
            *backup_schedule(workspace, settings),
            *log_shipping(workspace.home, settings),
        ]

    monitoring = MonitorProcess(monitoring_jobs, settings.log_level, settings.log_format)
    monitoring.start()
    current = [gateway]  # the set the next forked worker serves (the supervisor follows)
    try:
        if workers == 1:
            import signal

            from dockyard.reliability.logs import flush_on

            flush_on(signal.SIGTERM)  # the shutdown's last records are written before it exits
            gateway.start()
            loop_follower = None
            if follower is not None:
                loop_follower = LoopFollower(
                    follower, gateway, settings.follow_interval_s, settings.drain_timeout_s
                )
            app = create_app(
                settings, gateway, authenticator_for(settings, workspace), workspace, loop_follower
            )
            config = uvicorn_config(app, settings.host, settings.port, settings.log_level, options)
            DrainingServer(config).run(sockets=[sock])
        else:

            def worker_app() -> ASGIApp:
                workspace.after_fork()
                serving = current[0]
                serving.start()
                for deployment in serving.held().values():
                    warm_quietly(deployment)
                return create_app(
                    settings, serving, authenticator_for(settings, workspace), workspace
                )

            def follow() -> bool:
                """Load what the registry names in this process (shared by the next workers)
                and drop what no worker to come serves, before any of them is forked."""
                assert follower is not None
                new = follower.next_generation(current[0], warm_in_child)
                if new is None:
                    return False
                kept = {id(d) for d in new.held().values()}
                for deployment in current[0].held().values():
                    if id(deployment) not in kept:
                        deployment.close()
                current[0] = new
                gc.unfreeze()  # the old models' objects were frozen: let the collector free them
                settle_heap()
                return True

            Supervisor(
                worker_app,
                sock,
                settings.host,
                settings.port,
                workers,
                settings.log_level,
                options,
                log_format=settings.log_format,
                follow=follow if follower is not None else None,
                follow_interval_s=settings.follow_interval_s,
            ).run()
    finally:
        monitoring.stop()
        current[0].close()
        if settings.backend == "ray":
            from dockyard.scaling.ray_cluster import leave

            leave()
