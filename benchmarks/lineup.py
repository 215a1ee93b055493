"""Which servers each scenario compares, and with which request body.

Every server gets the same thread settings (``THREAD_ENV``) except in ``heavy-omp``, which shows
what the default OpenMP thread count does to a tree ensemble on a shared 2-core machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
SMALL_YARDSTICK = "dockyard, small model"
"""The small model served beside the heavy one, so the heavy target's ratio is side by side."""


@dataclasses.dataclass(frozen=True)
class Bodies:
    tabular: Path
    tabular_all_outputs: Path
    onnx: Path


def with_threads(spec: ServerSpec) -> ServerSpec:
    return dataclasses.replace(spec, env={**spec.env, **THREAD_ENV})


def _bare(model: Path, workers: int = 1) -> ServerSpec:
    return launch.reference_spec("bare_asgi.py", BARE, model, workers=workers)


def _mlserver(mlserver: Path, work: Path, name: str, model: Path, *, batching: bool) -> ServerSpec:
    label = MLSERVER_BATCHED if batching else MLSERVER
    folder = work / f"mlserver-{name}{'-batched' if batching else ''}"
    repository = models.write_mlserver_repository(folder, name, model, batching=batching)
    return launch.mlserver_spec(mlserver, repository, name, label)


def small(built: models.ModelSet, bodies: Bodies, mlserver: Path | None) -> list[Entry]:
    """Where server overhead dominates: every server, 1 and 2 workers, open loop for all."""
    home, model, body = built.home, built.small_file, bodies.tabular
    entries = [
        Entry(BARE, _bare(model), body),
        Entry(DOCKYARD, launch.dockyard_spec(home, "small:1"), body, is_profiled=True),
        Entry(FASTAPI, launch.reference_spec("fastapi_endpoint.py", FASTAPI, model), body),
    ]
    if mlserver is not None:
        entries.append(
            Entry(MLSERVER, _mlserver(mlserver, built.folder, "small", model, batching=False), body)
        )
    entries += [
        Entry(BARE, _bare(model, workers=2), body),
        Entry(DOCKYARD, launch.dockyard_spec(home, "small:1", workers=2), body),
    ]
    return [
        dataclasses.replace(entry, spec=with_threads(entry.spec), is_open_loop=True)
        for entry in entries
    ]


def heavy(built: models.ModelSet, bodies: Bodies, mlserver: Path | None) -> list[Entry]:
    """Where batching matters: Dockyard with and without it (and with the model in its own process,
    ``isolate``), MLServer with and without it; plus Dockyard serving the small model at 64
    connections, the yardstick of the heavy target, measured interleaved with the heavy rows."""
    home, model, body = built.home, built.heavy_file, bodies.tabular
    dockyard = launch.dockyard_spec(home, "heavy:1")
    unbatched = launch.dockyard_spec(home, "heavy:1", batching=False, label="dockyard-unbatched")
    isolated = launch.dockyard_spec(
        home, "heavy:1", label=DOCKYARD_ISOLATED, model_options=("heavy.isolate=true",)
    )
    entries = [
        Entry(BARE, _bare(model), body, is_open_loop=True),
        Entry(DOCKYARD, dockyard, body, is_open_loop=True, is_profiled=True),
        Entry(DOCKYARD_ISOLATED, isolated, body, is_open_loop=True),
        Entry(DOCKYARD_UNBATCHED, unbatched, body),
        Entry(DOCKYARD, launch.dockyard_spec(home, "heavy:1", workers=2), body),
        Entry(
            f"{DOCKYARD} (all outputs)",
            dockyard,
            bodies.tabular_all_outputs,
            connections=(1, 64),
        ),
        Entry(
            SMALL_YARDSTICK,
            launch.dockyard_spec(home, "small:1", label=SMALL_YARDSTICK),
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
    return [dataclasses.replace(entry, spec=with_threads(entry.spec)) for entry in entries]


def onnx(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The small model converted to ONNX, served by Dockyard (onnxruntime)."""
    spec = launch.dockyard_spec(built.home, "small-onnx:1")
    return [Entry(DOCKYARD, with_threads(spec), bodies.onnx)]


def heavy_default_threads(built: models.ModelSet, bodies: Bodies) -> list[Entry]:
    """The heavy model with OpenMP's default thread count (no THREAD_ENV), 1 and 64 connections."""
    home, model, body = built.home, built.heavy_file, bodies.tabular
    return [
        Entry(BARE, _bare(model), body, connections=(1, 64)),
        Entry(DOCKYARD, launch.dockyard_spec(home, "heavy:1"), body, connections=(1, 64)),
    ]
