"""Typed settings, read once at start-up.

Precedence: command-line flags > ``DOCKYARD_*`` environment variables > ``dockyard.toml`` >
defaults. Each value remembers where it came from, so ``dockyard config show`` can say so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockyard.encryption import open_cipher, seal_file, unseal_file
from dockyard.errors import InvalidInput
from dockyard.home import DIR_MODE, Home

ENV_PREFIX = "DOCKYARD_"
CONFIG_FILE_NAME = "dockyard.toml"
SEALED_SETTINGS = "settings.sealed"
"""Secret settings stored encrypted in the home's ``secrets`` folder (``dockyard config
set-secret``); they rank below flags and the environment and above the config file."""
SECRET_FIELDS = frozenset(
    {"database_url", "api_key_secret", "encryption_key", "alert_webhook_secret"}
)
DEFAULT_HOME = Path("~/.dockyard")
RAY_KNOBS = (
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "replica_cpus",
    "replica_gpus",
    "upscale_delay_s",
    "downscale_delay_s",
)
"""The per-model knobs (``[models.NAME]``) that size a version's Ray Serve replicas."""
MODEL_KNOBS = (
    "batching",
    "max_batch_size",
    "max_delay_ms",
    "prediction_timeout_s",
    "inline_budget_ms",
    "isolate",
    "log_sample",
    "max_queue",
    "breaker_failures",
    "fallback",
    *RAY_KNOBS,
)
"""Settings a single model may override: ``[models.NAME]`` in the file, ``--model-option`` flags."""
NOT_SETTINGS = frozenset({"sources", "models", "alerts", "governance"})
MACHINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""A ``log_machine``: one folder name (no ``/``, not ``.`` or ``..``)."""
OMP_THREADS_ENV = "OMP_NUM_THREADS"
"""Read as ``model_threads`` when DOCKYARD_MODEL_THREADS and the flag are not given."""


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How one served model is batched, timed and isolated: the global settings plus overrides."""

    batching: bool
    max_batch_size: int
    max_delay_ms: float
    prediction_timeout_s: float
    inline_budget_ms: float
    isolate: bool
    log_sample: float
    max_queue: int
    breaker_failures: int
    fallback: str
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    replica_cpus: float
    replica_gpus: float
    upscale_delay_s: float
    downscale_delay_s: float


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob Dockyard reads. Frozen: nothing changes a setting after start-up."""

    home: Path = DEFAULT_HOME
    database_url: str = ""
    artifact_url: str = ""
    """Where artifact blobs live. Empty: the home's ``artifacts`` folder. ``s3://BUCKET/PREFIX``:
    an S3 (or S3-compatible) bucket shared by every machine of one registry (extra ``s3``), read
    through a verified cache in the home (``artifacts-cache``). Its credentials come from the
    standard AWS chain (environment, ``~/.aws``, an instance role), never from Dockyard."""
    s3_endpoint_url: str = ""
    """The URL of an S3-compatible server (MinIO, Ceph, …) for ``artifact_url``, ``backup_url``
    and ``prediction_log_url``; empty: AWS."""
    s3_timeout_s: float = 60.0
    """How long the artifact bucket may take to accept a connection, or to send the next bytes
    of an answer, before the call fails (after its retries)."""
    backend: str = "local"
    """Where models run: ``local`` (in the serving processes) or ``ray`` (Ray Serve replicas on a
    Ray cluster, extra ``ray``; the server in front keeps every route, auth rule and metric)."""
    ray_address: str = ""
    """The Ray cluster of the ``ray`` backend: ``host:port`` of its head, ``auto`` (the one this
    machine runs), or ``ray://host:10001`` (Ray Client); empty: a Ray instance started for this
    server alone, on 127.0.0.1."""
    ray_deploy_timeout_s: float = 300.0
    """How long a version's replicas may take to start on Ray (placed, loaded) before the version
    counts as failed to load."""
    min_replicas: int = 1
    """Fewest Ray Serve replicas of a served version (``ray`` backend); a per-model knob."""
    max_replicas: int = 1
    """Most replicas Ray's autoscaler may start; above ``min_replicas`` it scales on the requests
    each replica holds (``target_ongoing_requests``). A per-model knob."""
    target_ongoing_requests: float = 2.0
    """Batches each replica should hold at once; the autoscaler adds replicas above it and removes
    them below it. A per-model knob."""
    replica_cpus: float = 1.0
    """CPUs Ray reserves for each replica (and the threads its model uses); a per-model knob."""
    replica_gpus: float = 0.0
    """GPUs Ray reserves for each replica; a per-model knob."""
    upscale_delay_s: float = 30.0
    """How long the load must stay above the target before the autoscaler adds a replica."""
    downscale_delay_s: float = 600.0
    """How long the load must stay below the target before the autoscaler removes a replica."""
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0
    """Serve the Open Inference Protocol's gRPC service on this port too, from every worker
    (extra ``grpc``); 0: no gRPC."""
    workers: int = 0
    """0 means one worker per CPU core."""
    model_threads: int = 0
    """OpenMP/BLAS threads per worker; 0 means each worker's share of the cores, less one for its
    event loop (at least 1).
    ``OMP_NUM_THREADS`` in the environment counts as this setting when nothing else sets it."""
    max_body_bytes: int = 10 * 1024 * 1024
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    prediction_timeout_s: float = 30.0
    max_batch_size: int = 64
    max_delay_ms: float = 0.0
    batching: bool = True
    inline_budget_ms: float = 1.0
    """Batches a model finishes within this (moving average) run on the event-loop thread."""
    isolate: bool = False
    """Run each worker's predictions in a child process of its own (crash isolation, own GIL)."""
    log_level: str = "info"
    log_format: str = "text"
    """``text`` (one line a record, for a terminal) or ``json`` (JSON lines)."""
    access_log: bool = False
    """One log record per request (method, path, status, duration, request id, client,
    principal), written off the event loop."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (besides IP literals, ``localhost`` and ``host``) the server answers to;
    ``*.example.com`` allows subdomains, ``*`` every name. Any other ``Host`` header is refused
    (DNS rebinding). Comma-separated in the environment and on the command line."""
    max_header_bytes: int = 64 * 1024
    """Largest request line plus headers; past it the server answers 431 and closes."""
    max_headers: int = 100
    """Most header fields in one request; past it the server answers 431 and closes."""
    header_timeout_s: float = 10.0
    """A request line and headers must arrive within this long of their first byte (408, close)."""
    body_timeout_s: float = 30.0
    """A request body may pause at most this long between bytes (408, close)."""
    auth: bool = True
    """Require an API key (or a JWT) on every route but the health probes. Turning it off is
    accepted only on a loopback address (``--no-auth``)."""
    api_key_secret: str = ""
    """The key of the keyed hash API keys are stored under; empty: a random one kept in the home
    (``secrets/api-key-hash-key``, mode 0600). Set the same value on every host sharing a
    registry."""
    encryption_key: str = ""
    """AES-256 key (base64 of 32 bytes) for what Dockyard stores encrypted; empty: a key file
    created in the home (``secrets/encryption-keys``, mode 0600)."""
    allow_pickle_uploads: bool = False
    """Let an admin key register pickle files and extra trusted types over HTTP (off: only on the
    server's machine, through the CLI)."""
    rate_limits: tuple[str, ...] = ()
    """Per-key request rates, ``ROLE=RATE`` or ``KEY_ID=RATE`` with RATE like ``100/s`` or
    ``6000/min`` (token bucket; bursts up to one second's worth). Comma-separated in the
    environment."""
    max_rows: int = 100_000
    """Most rows (first dimension of the inputs) one inference request may carry."""
    max_connections: int = 1000
    """Most concurrent connections one worker holds; past it new ones are answered 503."""
    tls_cert: str = ""
    """PEM certificate chain: serve HTTPS."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_client_ca: str = ""
    """PEM CA bundle: require client certificates signed by it (mutual TLS)."""
    require_signed: bool = False
    """Serve only versions whose artifact and identity carry a valid Ed25519 signature."""
    jwt_jwks: str = ""
    """Accept JWT bearer tokens verified against this JWKS: a file path or an https:// URL."""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_role_claim: str = "dockyard_role"
    """The claim holding the caller's role (predictor, deployer, approver, auditor, admin)."""
    jwt_models_claim: str = "dockyard_models"
    """The claim listing the models the caller may use (absent: all)."""
    metrics: bool = True
    """Count requests, latency, batches, errors and more per worker for ``/metrics``."""
    prediction_log: bool = True
    """Append every request (or the ``log_sample`` share) to the prediction log, off the hot
    path."""
    log_sample: float = 1.0
    """Share of requests the prediction log keeps (0 to 1); a per-model knob too."""
    log_flush_s: float = 1.0
    """How often each worker writes what it logged: what a killed worker can lose at most."""
    log_queue_rows: int = 100_000
    """Most logged rows waiting for the writer; past it new ones are shed and counted."""
    traces: bool = False
    """Send OpenTelemetry traces of inference (a span per request, per batch, per predict call)
    over OTLP/HTTP (extra ``otel``)."""
    otlp_endpoint: str = ""
    """Where traces are POSTed (``http://collector:4318/v1/traces``); empty: the OpenTelemetry
    variables ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
    ``http://localhost:4318/v1/traces``."""
    trace_sample: float = 1.0
    """Share of requests traced (0 to 1) when the caller sent no ``traceparent``; one that did
    is traced as its caller decided."""
    drift_window: str = "24h"
    """Live traffic drift compares with the reference: a time (``24h``) or rows (``100000rows``)."""
    drift_max_rows: int = 100_000
    """Most rows (the newest of ``drift_window``) the server's periodic drift job reads: a sample
    that keeps a round every ``drift_interval_s`` cheap; on-demand drift reads the whole window."""
    drift_interval_s: float = 60.0
    """How often the server computes drift, evaluations and alert rules."""
    drift_psi_threshold: float = 0.2
    """A numeric feature with a population stability index above this has drifted."""
    drift_pvalue: float = 0.01
    """A feature whose KS or chi-square test's p-value is below this has drifted."""
    max_queue: int = 1024
    """Most rows waiting in one model's queue; past it new requests are shed at once with 503 and
    ``Retry-After`` instead of waiting longer and longer (0: no bound). A per-model knob too."""
    breaker_failures: int = 5
    """A served version whose predictions fail this many times in a row opens its circuit: it is
    answered with 503 at once (or by its ``fallback``) until ``breaker_reset_s`` has passed and a
    trial request succeeds (0: never opens). A per-model knob too."""
    breaker_reset_s: float = 30.0
    """How long an open circuit stays open before one trial request may pass."""
    fallback: str = ""
    """The version (``3``) or alias (``stable``) that answers a model's requests while its circuit
    is open; empty: 503. A per-model knob (``[models.NAME] fallback``)."""
    follow_registry: bool = True
    """A running server notices alias moves and rollout steps in the registry and swaps the
    versions it serves, without a restart (``--no-follow``: keep what it loaded at start)."""
    follow_interval_s: float = 2.0
    """How often a server checks the registry for alias moves and rollout steps."""
    drain_timeout_s: float = 30.0
    """How long a stopping server (SIGTERM) or a replaced worker may take to finish the requests
    it holds before it exits."""
    backup_every: str = ""
    """Take a backup of the home this often while serving (``1h``, ``30m``); empty: never."""
    backup_keep: int = 24
    """Scheduled backups kept in the home's ``backups`` folder; older ones are deleted."""
    backup_url: str = ""
    """Where backups are copied besides the home's ``backups`` folder. Empty: nowhere else.
    ``s3://BUCKET/PREFIX``: every backup ``dockyard backup create`` and the schedule write is
    verified, then uploaded there (extra ``s3``; ``s3_endpoint_url``, ``s3_timeout_s`` and the
    standard AWS credential chain, as for ``artifact_url``), the local copy kept; the schedule
    keeps the newest ``backup_keep`` there too."""
    prediction_log_url: str = ""
    """Where the prediction log is mirrored besides the home's ``predictions`` folder. Empty:
    nowhere. ``s3://BUCKET/PREFIX``: the monitoring process copies the home's settled segments to
    ``PREFIX/<log_machine>/<model>/<YYYY-MM-DD>/`` every ``log_ship_interval_s`` (as they are on
    disk, sealed ones sealed) and deletes there what compaction, retention or an erasure removed
    here; ``dockyard monitor log --machines all`` reads every machine's (extra ``s3``; the
    endpoint, timeout and credentials of ``artifact_url``)."""
    log_machine: str = ""
    """This home's folder under ``prediction_log_url``; empty: the host name. Each home writing
    to one bucket needs its own: a home mirrors its folder, deleting what it does not hold."""
    log_ship_interval_s: float = 60.0
    """How often the prediction log is mirrored to ``prediction_log_url``: what a retention purge
    or an erasure removed is gone from the bucket within this interval."""
    rollout_max_error_rate: float = 0.05
    """A rollout's candidate whose share of failed requests passes this is rolled back."""
    rollout_max_p99_ratio: float = 2.0
    """A rollout's candidate whose p99 latency passes this multiple of the stable version's is
    rolled back."""
    rollout_max_disagreement: float = 0.1
    """A shadow rollout's candidate whose outputs differ from the stable version's on more than
    this share of mirrored requests is rolled back."""
    rollout_min_requests: int = 20
    """Requests a candidate must have answered before the rollback limits are judged."""
    alert_webhook: str = ""
    """URL alerts are POSTed to (JSON, HMAC-signed with ``alert_webhook_secret``)."""
    alert_webhook_secret: str = ""
    """Key of the HMAC-SHA256 signature of each webhook body (``X-Dockyard-Signature``)."""
    models: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    """Per-model overrides of MODEL_KNOBS, keyed by model name."""
    alerts: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    """Alert rules, ``[alerts.NAME]`` tables of the config file, as written (checked by
    ``dockyard.monitoring.alerts``)."""
    governance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The ``[governance]`` table of the config file, as written (checked by
    ``dockyard.governance.policy``): protected aliases, card fields, gates, personal data,
    retention."""
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            if field.name in NOT_SETTINGS:
                continue
            value = getattr(self, field.name)
            if field.name in SECRET_FIELDS and value:
                value = "***"
            shown.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def shown_value(self, name: str) -> str:
        """The value of one setting as safe to print: secrets are masked."""
        value = getattr(self, name)
        if name in SECRET_FIELDS and value:
            return "***"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def effective_workers(self) -> int:
        """Worker processes to run: the setting, or one per CPU core when it is 0."""
        return self.workers or len(os.sched_getaffinity(0)) or 1

    def effective_model_threads(self) -> int:
        """Threads each worker's numeric libraries may use, so workers do not oversubscribe: by
        default its share of the cores less one, which its event loop keeps. OpenMP threads spin
        while they wait; one that shares its core with the event loop makes the loop wait a time
        slice for each parallel region (a tree ensemble served by one worker on 2 cores with 2
        OpenMP threads answered 3-10 x fewer requests than with 1)."""
        cores = len(os.sched_getaffinity(0)) or 1
        return self.model_threads or max(1, cores // self.effective_workers() - 1)

    def model_options(self, name: str) -> ModelOptions:
        """The batching, timeout and isolation knobs for model ``name``, overrides applied."""
        overrides = self.models.get(name, {})
        values = {knob: overrides.get(knob, getattr(self, knob)) for knob in MODEL_KNOBS}
        return ModelOptions(**values)

    def effective_database_url(self) -> str:
        """The SQLAlchemy URL of the registry: the configured one, else the SQLite file in home."""
        return self.database_url or f"sqlite:///{self.home / 'dockyard.db'}"

    def effective_log_machine(self) -> str:
        """The folder of this home's segments under ``prediction_log_url``: ``log_machine``, else
        the host name."""
        return self.log_machine or socket.gethostname()


def setting_names() -> list[str]:
    """Names of all user-facing settings, in declaration order."""
    return [f.name for f in dataclasses.fields(Settings) if f.name not in NOT_SETTINGS]


def _convert(name: str, raw: Any) -> Any:
    """Turn a raw value (a string from env, a TOML value, a flag) into the field's type."""
    default = getattr(Settings, name)
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if isinstance(default, Path):
            return Path(str(raw)).expanduser()
        if isinstance(default, tuple):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(text for item in items if (text := str(item).strip()))
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except ValueError:
        kind = type(default).__name__
        raise InvalidInput(f"setting {name!r} must be a {kind}, got {raw!r}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from exc
    section = data.get("dockyard", data)
    if not isinstance(section, dict):
        raise InvalidInput(f"config file {path}: [dockyard] must be a table")
    return section


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build the Settings from flags, environment, config file and defaults, in that order.

    Flags whose value is None are treated as not given. The config file is ``config_file``, else
    ``$DOCKYARD_CONFIG``, else ``./dockyard.toml`` when it exists.
    """
    env = os.environ if env is None else env
    names = set(setting_names())
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = config_file or (
        Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None
    )
    if path is None and Path(CONFIG_FILE_NAME).is_file():
        path = Path(CONFIG_FILE_NAME)
    models: dict[str, dict[str, Any]] = {}
    alerts: dict[str, dict[str, Any]] = {}
    governance: dict[str, Any] = {}
    if path is not None:
        for key, raw in _read_file(path).items():
            if key == "models":
                _merge_models(models, raw, f"config file {path}")
                continue
            if key == "alerts":
                alerts = _tables(raw, f"config file {path}: alerts")
                continue
            if key == "governance":
                if not isinstance(raw, Mapping):
                    raise InvalidInput(f"config file {path}: governance must be a table")
                governance = dict(raw)
                continue
            if key not in names:
                raise InvalidInput(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(key, raw)
            sources[key] = f"file {path}"

    for name in names:
        env_name = ENV_PREFIX + name.upper()
        if env.get(env_name):
            values[name] = _convert(name, env[env_name])
            sources[name] = f"env {env_name}"

    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name == "model_options":
            _merge_models(models, _parse_model_flags(raw), "--model-option")
            continue
        if name not in names:
            raise InvalidInput(f"unknown setting {name!r}")
        values[name] = _convert(name, raw)
        sources[name] = "flag"

    if "model_threads" not in values and env.get(OMP_THREADS_ENV, "").strip().isdigit():
        # The standard OpenMP variable, set on purpose: threadpool limits must not override it.
        values["model_threads"] = int(env[OMP_THREADS_ENV])
        sources["model_threads"] = f"env {OMP_THREADS_ENV}"

    values["home"] = Path(values.get("home", DEFAULT_HOME)).expanduser()
    for name, value in read_sealed_settings(
        values["home"], values.get("encryption_key", "")
    ).items():
        if not sources.get(name, "").startswith(("env", "flag")):
            values[name] = value
            sources[name] = f"sealed {Home(values['home']).secrets / SEALED_SETTINGS}"
    for name in names - sources.keys():
        sources[name] = "default"
    settings = Settings(
        **values, models=models, alerts=alerts, governance=governance, sources=sources
    )
    _validate(settings)
    return settings


def read_sealed_settings(home: Path, encryption_key: str) -> dict[str, str]:
    """The secret settings sealed in ``home`` (none when there is no sealed file)."""
    path = Home(home).secrets / SEALED_SETTINGS
    if not path.is_file():
        return {}
    stored = json.loads(unseal_file(path, open_cipher(path.parent, encryption_key)))
    return {str(name): str(value) for name, value in stored.items() if name in SECRET_FIELDS}


def seal_setting(settings: Settings, name: str, value: str) -> Path:
    """Store secret setting ``name`` encrypted in the home; returns the sealed file's path."""
    if name not in SECRET_FIELDS - {"encryption_key"}:
        sealable = ", ".join(sorted(SECRET_FIELDS - {"encryption_key"}))
        raise InvalidInput(f"{name!r} is not a secret setting that can be sealed; use {sealable}")
    folder = Home(settings.home).secrets
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    cipher = open_cipher(folder, settings.encryption_key)
    path = folder / SEALED_SETTINGS
    stored = json.loads(unseal_file(path, cipher)) if path.is_file() else {}
    stored[name] = value
    seal_file(path, cipher, json.dumps(stored).encode())
    return path


def _merge_models(models: dict[str, dict[str, Any]], raw: Any, where: str) -> None:
    """Fold ``{model: {knob: value}}`` into ``models``, checking each knob and converting it."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: models must be a table of tables, one per model")
    for model, knobs in raw.items():
        if not isinstance(knobs, Mapping):
            raise InvalidInput(f"{where}: models.{model} must be a table")
        for knob, value in knobs.items():
            if knob not in MODEL_KNOBS:
                raise InvalidInput(
                    f"{where}: models.{model}.{knob} is not a per-model setting; "
                    f"use one of {', '.join(MODEL_KNOBS)}"
                )
            models.setdefault(str(model), {})[knob] = _convert(knob, value)


def _tables(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """``{name: {key: value}}`` as written, each entry checked to be a table."""
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise InvalidInput(f"{where} must be a table of tables, one per name")
    return {str(name): dict(table) for name, table in raw.items()}


def _check_prediction_log(settings: Settings) -> None:
    """``prediction_log_url`` an ``s3://BUCKET/PREFIX``, and the machine's folder in it a name
    that cannot leave it."""
    bucket = settings.prediction_log_url.removeprefix("s3://").partition("/")[0]
    if not settings.prediction_log_url.startswith("s3://") or not bucket:
        raise InvalidInput(
            f"prediction_log_url must be s3://BUCKET/PREFIX (empty: the home's predictions "
            f"folder only), got {settings.prediction_log_url!r}"
        )
    machine = settings.effective_log_machine()
    if not MACHINE_NAME.match(machine):
        given = "log_machine" if settings.log_machine else "the host name (log_machine unset)"
        raise InvalidInput(
            f"{given} {machine!r} cannot name a folder in prediction_log_url: set log_machine "
            "(DOCKYARD_LOG_MACHINE) to 1-128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def _check_replicas(settings: Settings, model: str | None) -> None:
    """The Ray replica knobs of ``model`` (None: the defaults), each with the name it was set as."""
    options = settings.model_options(model) if model is not None else settings
    where = "" if model is None else f"models.{model}."
    if options.min_replicas < 0 or options.max_replicas < max(1, options.min_replicas):
        raise InvalidInput(
            f"{where}min_replicas and {where}max_replicas must satisfy 0 <= min <= max and "
            f"max >= 1, got {options.min_replicas} and {options.max_replicas}"
        )
    if options.target_ongoing_requests <= 0:
        raise InvalidInput(
            f"{where}target_ongoing_requests must be more than 0, got "
            f"{options.target_ongoing_requests}"
        )
    for knob in ("replica_cpus", "replica_gpus", "upscale_delay_s", "downscale_delay_s"):
        if getattr(options, knob) < 0:
            raise InvalidInput(f"{where}{knob} must be 0 or more, got {getattr(options, knob)}")


def _parse_model_flags(items: Any) -> dict[str, dict[str, str]]:
    """``["fraud.max_batch_size=32", "fraud.batching=false"]`` as nested overrides."""
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = str(item).partition("=")
        model, dot, knob = target.rpartition(".")
        if not sep or not dot or not model:
            raise InvalidInput(f"--model-option {item!r} must look like MODEL.SETTING=VALUE")
        parsed.setdefault(model, {})[knob] = value
    return parsed


def _validate(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise InvalidInput(f"port must be between 0 and 65535, got {settings.port}")
    if not 0 <= settings.grpc_port <= 65535:
        raise InvalidInput(
            f"grpc_port must be between 1 and 65535 (0: no gRPC), got {settings.grpc_port}"
        )
    if settings.grpc_port and settings.grpc_port == settings.port:
        raise InvalidInput(f"grpc_port and port are both {settings.port}: give gRPC its own port")
    if settings.model_threads < 0:
        raise InvalidInput(
            f"model_threads must be 0 (automatic) or more, got {settings.model_threads}"
        )
    if settings.log_format not in ("text", "json"):
        raise InvalidInput(f"log_format must be text or json, got {settings.log_format!r}")
    if settings.backend not in ("local", "ray"):
        raise InvalidInput(f"backend must be local or ray, got {settings.backend!r}")
    if settings.ray_address and not (
        settings.ray_address == "auto"
        or settings.ray_address.startswith("ray://")
        or _is_host_port(settings.ray_address)
    ):
        raise InvalidInput(
            f"ray_address must be HOST:PORT, auto or ray://HOST:PORT (empty: a Ray instance of "
            f"this server's own), got {settings.ray_address!r}"
        )
    for model in (None, *settings.models):
        _check_replicas(settings, model)
    if settings.workers < 0:
        raise InvalidInput(f"workers must be 0 (one per core) or more, got {settings.workers}")
    for name in (
        "max_body_bytes",
        "max_upload_bytes",
        "max_header_bytes",
        "max_headers",
        "drift_max_rows",
    ):
        if getattr(settings, name) < 1:
            raise InvalidInput(f"{name} must be at least 1, got {getattr(settings, name)}")
    if settings.max_rows < 1 or settings.max_connections < 1:
        raise InvalidInput("max_rows and max_connections must be at least 1")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise InvalidInput("tls_cert and tls_key go together: give both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise InvalidInput("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    if settings.artifact_url and not settings.artifact_url.startswith("s3://"):
        raise InvalidInput(
            f"artifact_url must be s3://BUCKET/PREFIX (empty: the home's artifacts folder), "
            f"got {settings.artifact_url!r}"
        )
    if settings.backup_url and not settings.backup_url.startswith("s3://"):
        raise InvalidInput(
            f"backup_url must be s3://BUCKET/PREFIX (empty: the home's backups folder only), "
            f"got {settings.backup_url!r}"
        )
    if settings.prediction_log_url:
        _check_prediction_log(settings)
    if settings.s3_endpoint_url and not settings.s3_endpoint_url.startswith(
        ("http://", "https://")
    ):
        raise InvalidInput(
            f"s3_endpoint_url must be an http:// or https:// URL, got {settings.s3_endpoint_url!r}"
        )
    if not 0 <= settings.trace_sample <= 1:
        raise InvalidInput(f"trace_sample must be between 0 and 1, got {settings.trace_sample}")
    if settings.otlp_endpoint and not settings.otlp_endpoint.startswith(("http://", "https://")):
        raise InvalidInput(
            f"otlp_endpoint must be an http:// or https:// URL (OTLP over HTTP), "
            f"got {settings.otlp_endpoint!r}"
        )
    for name in ("header_timeout_s", "body_timeout_s", "s3_timeout_s", "log_ship_interval_s"):
        if getattr(settings, name) <= 0:
            raise InvalidInput(f"{name} must be positive, got {getattr(settings, name)}")
    if settings.jwt_jwks:
        # The audience is what stops a token minted for another service from working here.
        if not settings.jwt_audience:
            raise InvalidInput("jwt_jwks needs jwt_audience: JWTs are accepted only for it")
        scheme = settings.jwt_jwks.partition("://")[0] if "://" in settings.jwt_jwks else ""
        if scheme not in {"", "https", "http"}:
            raise InvalidInput(
                f"jwt_jwks must be a file path or an https:// URL, got {settings.jwt_jwks!r}"
            )
    for model in ("", *settings.models):
        options = settings.model_options(model)
        where = f" (model {model})" if model else ""
        if options.max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1{where}")
        if options.prediction_timeout_s <= 0:
            raise InvalidInput(f"prediction_timeout_s must be positive{where}")
        if options.max_delay_ms < 0:
            raise InvalidInput(f"max_delay_ms must not be negative{where}")
        if options.inline_budget_ms < 0:
            raise InvalidInput(f"inline_budget_ms must not be negative{where}")
