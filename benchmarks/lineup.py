"""Which servers each scenario compares, and with which request body.

Dockyard runs as users run it, with nothing set in the environment: it limits its OpenMP/BLAS
threads itself. The reference servers (bare callable, FastAPI, MLServer) get ``THREAD_ENV``: with
OpenMP's default of one spinning thread per core they collapse on a shared 2-core machine, and a
comparison with a collapsed server says nothing. ``heavy-defaults`` compares Dockyard's defaults
with the same server given ``THREAD_ENV``.

Auth is on in every Dockyard row (its default): each carries the bench home's predictor key and
sends it with every request. ``auth-cost`` measures what that costs: the small model with auth and
a rate limit checked on every request, against the same server with ``--no-auth``.
``monitoring-cost`` does the same for monitoring: metrics off, metrics on, and metrics on with
every request written to the prediction log. ``privacy-cost`` logs every request twice over: as
it came, and through personal-data rules (a feature hashed, one generalized).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import launch
import models
from launch import ServerSpec
from scenarios import Entry

THREAD_ENV = {"OMP_NUM_THREADS": "1"}
BARE = "bare-asgi"
FASTAPI = "fastapi"
MLSERVER = "mlserver"
MLSERVER_BATCHED = "mlserver (adaptive batching)"
DOCKYARD = "dockyard"
DOCKYARD_UNBATCHED = "dockyard (no batching)"
DOCKYARD_ISOLATED = "dockyard (isolate)"
DOCKYARD_DEFAULTS = "dockyard (defaults)"
DOCKYARD_THREAD_ENV = "dockyard (OMP_NUM_THREADS=1)"
DOCKYARD_BESIDE_SMALL = "dockyard (defaults, beside the small model)"
DEFAULTS_CONNECTIONS = (8, 64)
SMALL_YARDSTICK = "dockyard, small model"
"""The small model served beside the heavy one, so the heavy target's ratio is side by side."""
DOCKYARD_AUTH = "dockyard (auth + rate limits)"
DOCKYARD_NO_AUTH = "dockyard (--no-auth)"
AUTH_COST_CONNECTIONS = (1, 64)
AUTH_RATE_LIMITS = "predictor=1000000/s"
"""So high it never refuses (the bucket holds a second's worth), yet the predictor key's bucket is
counted and refilled on every request: the cost of a limit, not of refusals."""
AUTH_COST_NOTE = (
    f"Both serve the small model with 1 worker and every default; '{DOCKYARD_AUTH}' adds "
    f"DOCKYARD_RATE_LIMITS={AUTH_RATE_LIMITS} to its environment (a rate it never reaches, so "
    "nothing is refused, but the key's token bucket is checked on every request), and "
    f"'{DOCKYARD_NO_AUTH}' adds --no-auth to its command (no key checked; the harness sends its "
    "Authorization header anyway, unread)."
)


DOCKYARD_LOCAL = "dockyard (local backend)"
DOCKYARD_RAY = "dockyard (ray backend)"
RAY_SERVE = "ray serve (its HTTP proxy)"
RAY_CONNECTIONS = (1, 64)
RAY_NOTE = (
    f"Each server starts a Ray instance of its own on this machine's 2 cores (127.0.0.1, like "
    f"every local Ray start here) and runs alone. '{DOCKYARD_RAY}' is `dockyard serve small:1` "
    "with DOCKYARD_BACKEND=ray and every other default: one serving process in front (routes, "
    "auth, metrics, the prediction log, batching) and one Ray Serve replica of 1 CPU predicting "
    f"its batches. '{RAY_SERVE}' is a plain Ray Serve deployment of the same model file "
    "(benchmarks/ray_serve_plain.py: one replica of 1 CPU parsing the V2 JSON itself, as the "
    f"bare ASGI reference does) behind Ray's HTTP proxy. '{DOCKYARD_LOCAL}' is the same "
    "`dockyard serve small:1` with the model in its one worker."
)


DOCKYARD_UNMONITORED = "dockyard (metrics off)"
DOCKYARD_METRICS = "dockyard (metrics on)"
DOCKYARD_LOGGED = "dockyard (metrics on, every request logged)"
MONITORING_COST_CONNECTIONS = (1, 64)
MONITORING_ENV = {
    DOCKYARD_UNMONITORED: {"DOCKYARD_METRICS": "false", "DOCKYARD_PREDICTION_LOG": "false"},
    DOCKYARD_METRICS: {"DOCKYARD_METRICS": "true", "DOCKYARD_PREDICTION_LOG": "false"},
    DOCKYARD_LOGGED: {
        "DOCKYARD_METRICS": "true",
        "DOCKYARD_PREDICTION_LOG": "true",
        "DOCKYARD_LOG_SAMPLE": "1.0",
    },
}
"""Each monitoring-cost server's environment: every setting it depends on, set explicitly."""
MONITORING_COST_NOTE = (
    "All three serve the small model with 1 worker, auth on and every other default; they differ "
    "only in their environment: "
    + "; ".join(
        f"'{label}': {' '.join(f'{k}={v}' for k, v in env.items())}"
        for label, env in MONITORING_ENV.items()
    )
    + ". Logged requests are written to Parquet segments in the bench home by each worker's "
    "background writer."
)


DOCKYARD_ANONYMIZED = "dockyard (metrics on, every request logged, personal-data rules)"
PRIVACY_COST_CONNECTIONS = (1, 64)
PRIVACY_CONFIG = "privacy.toml"
PRIVACY_RULES = '[governance.personal_data.small]\nx0 = "hash"\nx1 = "generalize:0.5"\n'
"""The rules of the anonymized server: the small model's first feature (of 30) hashed with the
home's key, its second bucketed to 0.5, in every logged row."""
PRIVACY_COST_NOTE = (
    f"Both serve the small model with 1 worker, auth on and every request logged "
    f"({' '.join(f'{k}={v}' for k, v in MONITORING_ENV[DOCKYARD_LOGGED].items())}); "
    f"'{DOCKYARD_ANONYMIZED}' adds DOCKYARD_CONFIG naming a dockyard.toml with "
    + PRIVACY_RULES.replace("\n", " ").strip()
    + ": each worker's log writer hashes x0 (HMAC-SHA256 under the home's pseudonym key) and "
    "buckets x1 in every segment before it is written."
)


PYTHONS_LABEL = "dockyard (Python {version})"
PYTHONS_CONNECTIONS = (1, 64)
PYTHONS_NOTE = (
    "Each serves the small model with 1 worker, auth on and every other default, from a core-only "
    "install of this checkout on its interpreter (benchmarks/pythons.py: benchmarks/.venv-core "
    "for the one running the bench, benchmarks/.venv-core-3.X for the others): the same code and "
    "the same request, only Python differs (and the versions pip resolves for it)."
)

OPTIMIZE_ORIGINAL = "dockyard, {model} original"
OPTIMIZE_OPTIMIZED = "dockyard, {model} optimized"
OPTIMIZE_DEFAULTS = " (defaults)"
OPTIMIZE_HEAVY_CONNECTIONS = (1, 64)
OPTIMIZE_SMALL_CONNECTIONS = (1, 64)
"""The small model at 64 too: its optimized version there is the server's ceiling (the least
model work a request can cost), which bounds what the heavy model's can reach."""
OPTIMIZE_DEFAULTS_CONNECTIONS = (64,)
OPTIMIZE_NOTE = (
    "Each model served from its original version and from the fastest version `dockyard "
    "optimize` registered from it (skl2onnx for the logistic regression; Treelite's GTIL or "
    "tl2cgen's native code for the gradient boosting, where skl2onnx 1.20 fails: the table of "
    "optimized versions above says which), side by side, 1 worker each and every other "
    "default; the same request body (input-0 [1, 30] FP64, predict_proba) to both: the optimized "
    "version keeps the original's signature. The '(defaults)' rows serve the heavy model "
    "with one worker per core, as `dockyard serve` does by default. The small model's optimized "
    "version at 64 connections is the ceiling any model reaches on this server and machine."
)


def optimize_label(model: str, *, optimized: bool, defaults: bool = False) -> str:
    """The server label of one side of the ``optimize`` scenario (its ref is in the report's
    table of optimized versions); ``defaults``: served with one worker per core."""
    template = OPTIMIZE_OPTIMIZED if optimized else OPTIMIZE_ORIGINAL
    return template.format(model=model) + (OPTIMIZE_DEFAULTS if defaults else "")


@dataclasses.dataclass(frozen=True)
class Bodies:
    tabular: Path
    tabular_all_outputs: Path
    onnx: Path


def _dockyard(built: models.ModelSet, ref: str, **options: Any) -> ServerSpec:
    """``dockyard serve ref`` on the bench home, its requests carrying the home's predictor key."""
    return launch.dockyard_spec(built.home, ref, api_key=built.api_key, **options)


def with_threads(spec: ServerSpec) -> ServerSpec:
    return dataclasses.replace(spec, env={**spec.env, **THREAD_ENV})


def _bare(model: Path, workers: int = 1) -> ServerSpec:
    return with_threads(launch.reference_spec("bare_asgi.py", BARE, model, workers=workers))


def _mlserver(mlserver: Path, work: Path, name: str, model: Path, *, batching: bool) -> ServerSpec:
    label = MLSERVER_BATCHED if batching else MLSERVER
    folder = work / f"mlserver-{name}{'-batched' if batching else ''}"
    repository = models.write_mlserver_repository(folder, name, model, batching=batching)
    return with_threads(launch.mlserver_spec(mlserver, repository, name, label))


def small(built: models.ModelSet, bodies: Bodies, mlserver: Path | None) -> list[Entry]:
    """Where server overhead dominates: every server, 1 and 2 workers, open loop for all."""
    model, body = built.small_file, bodies.tabular
    entries = [
        Entry(BARE, _bare(model), body),
        Entry(DOCKYARD, _dockyard(built, "small:1"), body, is_profiled=True),
        Entry(
            FASTAPI,
            with_threads(launch.reference_spec("fastapi_endpoint.py", FASTAPI, model)),
            body,
        ),
    ]
    if mlserver is not None:
        entries.append(
            Entry(MLSERVER, _mlserver(mlserver, built.folder, "small", model, batching=False), body)
        )
    entries += [
        Entry(BARE, _bare(model, workers=2), body),
        Entry(DOCKYARD, _dockyard(built, "small:1", workers=2), body),
    ]
    return [dataclasses.replace(entry, is_open_loop=True) for entry in entries]


def heavy(built: models.ModelSet, bodies: Bodies, mlserver: Path | None) -> list[Entry]:
    """Where batching matters: Dockyard with and without it (and with the model in its own process,
    ``isolate``), MLServer with and without it; plus Dockyard serving the small model at 64
    connections, the yardstick of the heavy target, measured interleaved with the heavy rows."""
    model, body = built.heavy_file, bodies.tabular
    dockyard = _dockyard(built, "heavy:1")
    unbatched = _dockyard(built, "heavy:1", batching=False, label="dockyard-unbatched")
    isolated = _dockyard(
        built, "heavy:1", label=DOCKYARD_ISOLATED, model_options=("heavy.isolate=true",)
    )
    entries = [
        Entry(BARE, _bare(model), body, is_open_loop=True),
        Entry(DOCKYARD, dockyard, body, is_open_loop=True, is_profiled=True),
        Entry(DOCKYARD_ISOLATED, isolated, body, is_open_loop=True),
        Entry(DOCKYARD_UNBATCHED, unbatched, body),
        Entry(DOCKYARD, _dockyard(built, "heavy:1", workers=2), body),
        Entry(
            f"{DOCKYARD} (all outputs)",
            dockyard,
            bodies.tabular_all_outputs,
            connections=(1, 64),
        ),
        Entry(
            SMALL_YARDSTICK,
            _dockyard(built, "small:1", label=SMALL_YARDSTICK),
            body,
            connections=(64,),
        ),
    ]
    if mlserver is not None:
        entries += [
            Entry(
                MLSERVER, _mlserver(mlserver, built.folder, "heavy", model, batching=False), body
            ),
            Entry(
                MLSERVER_BATCHED,
                _mlserver(mlserver, built.folder, "heavy", model, batching=True),
                body,
                is_open_loop=True,
            ),
        ]
    return entries


def onnx(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model converted to ONNX, served by Dockyard (onnxruntime)."""
    spec = _dockyard(built, "small-onnx:1")
    return [Entry(DOCKYARD, spec, bodies.onnx)]


def heavy_defaults(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The heavy model served with every default (one worker per core, nothing in the
    environment), the same with THREAD_ENV, and with the defaults beside the small model."""
    body = bodies.tabular
    defaults = _dockyard(built, "heavy:1", workers=None, label=DOCKYARD_DEFAULTS)
    return [
        Entry(DOCKYARD_DEFAULTS, defaults, body, connections=DEFAULTS_CONNECTIONS),
        Entry(
            DOCKYARD_THREAD_ENV,
            with_threads(dataclasses.replace(defaults, label=DOCKYARD_THREAD_ENV)),
            body,
            connections=DEFAULTS_CONNECTIONS,
        ),
        Entry(
            DOCKYARD_BESIDE_SMALL,
            _dockyard(
                built, "heavy:1", workers=None, label=DOCKYARD_BESIDE_SMALL, beside=("small:1",)
            ),
            body,
            connections=DEFAULTS_CONNECTIONS,
        ),
    ]


def auth_cost(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model (1 worker) with auth and a rate limit checked on every request, and the
    same server with ``--no-auth``, side by side at 1 and 64 connections (``AUTH_COST_NOTE``)."""
    limited = _dockyard(
        built, "small:1", label=DOCKYARD_AUTH, env={"DOCKYARD_RATE_LIMITS": AUTH_RATE_LIMITS}
    )
    open_ = _dockyard(built, "small:1", label=DOCKYARD_NO_AUTH, auth=False)
    return [
        Entry(DOCKYARD_AUTH, limited, bodies.tabular, connections=AUTH_COST_CONNECTIONS),
        Entry(DOCKYARD_NO_AUTH, open_, bodies.tabular, connections=AUTH_COST_CONNECTIONS),
    ]


def ray_backend(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model on the Ray backend, on plain Ray Serve and on the local backend, side by
    side at 1 and 64 connections (``RAY_NOTE``); the Ray backend's server is profiled."""
    plain = launch.reference_spec("ray_serve_plain.py", RAY_SERVE, built.small_file, workers=None)
    return [
        Entry(
            DOCKYARD_RAY,
            _dockyard(built, "small:1", label=DOCKYARD_RAY, env={"DOCKYARD_BACKEND": "ray"}),
            bodies.tabular,
            connections=RAY_CONNECTIONS,
            is_profiled=True,
        ),
        Entry(
            RAY_SERVE,
            plain,
            bodies.tabular,
            connections=RAY_CONNECTIONS,
        ),
        Entry(
            DOCKYARD_LOCAL,
            _dockyard(built, "small:1", label=DOCKYARD_LOCAL),
            bodies.tabular,
            connections=RAY_CONNECTIONS,
        ),
    ]


def monitoring_cost(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model (1 worker) with metrics off, on, and on with every request logged, side
    by side at 1 and 64 connections (``MONITORING_COST_NOTE``)."""
    return [
        Entry(
            label,
            _dockyard(built, "small:1", label=label, env=env),
            bodies.tabular,
            connections=MONITORING_COST_CONNECTIONS,
        )
        for label, env in MONITORING_ENV.items()
    ]


def privacy_cost(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model (1 worker) with every request logged, as it came and through
    ``PRIVACY_RULES``, side by side at 1 and 64 connections (``PRIVACY_COST_NOTE``)."""
    config = built.folder / PRIVACY_CONFIG
    config.write_text(PRIVACY_RULES)
    logged = MONITORING_ENV[DOCKYARD_LOGGED]
    anonymized = {**logged, "DOCKYARD_CONFIG": str(config)}
    envs = {DOCKYARD_LOGGED: logged, DOCKYARD_ANONYMIZED: anonymized}
    return [
        Entry(
            label,
            _dockyard(built, "small:1", label=label, env=env),
            bodies.tabular,
            connections=PRIVACY_COST_CONNECTIONS,
        )
        for label, env in envs.items()
    ]


def pythons(built: models.ModelSet, bodies: Bodies, executables: dict[str, Path]) -> list[Entry]:
    """The small model served from each interpreter's install, side by side at 1 and 64
    connections (``PYTHONS_NOTE``). ``executables``: Python version -> its ``dockyard``."""
    entries = []
    for version, executable in executables.items():
        label = PYTHONS_LABEL.format(version=version)
        spec = _dockyard(built, "small:1", label=label, executable=executable)
        entries.append(Entry(label, spec, bodies.tabular, connections=PYTHONS_CONNECTIONS))
    return entries


def optimize(
    built: models.ModelSet, bodies: Bodies, refs: dict[str, tuple[str, str]]
) -> list[Entry]:
    """Each model's original and optimized versions side by side (``OPTIMIZE_NOTE``): the heavy
    one at 1 and 64 connections (1 worker) and at 64 with one worker per core, the small one at
    1. ``refs``: model -> (original, optimized)."""
    connections = {"heavy": OPTIMIZE_HEAVY_CONNECTIONS, "small": OPTIMIZE_SMALL_CONNECTIONS}
    entries = []
    for model, pair in refs.items():
        for ref, is_optimized in zip(pair, (False, True), strict=True):
            label = optimize_label(model, optimized=is_optimized)
            entries.append(
                Entry(
                    label,
                    _dockyard(built, ref, label=label),
                    bodies.tabular,
                    connections=connections[model],
                )
            )
            if model == "heavy":
                label = optimize_label(model, optimized=is_optimized, defaults=True)
                entries.append(
                    Entry(
                        label,
                        _dockyard(built, ref, label=label, workers=None),
                        bodies.tabular,
                        connections=OPTIMIZE_DEFAULTS_CONNECTIONS,
                    )
                )
    return entries
