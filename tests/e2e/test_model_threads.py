"""The OpenMP thread limit reaches the thread that runs the model (served with the defaults).

An OpenMP thread count is a per-thread setting: a limit set on the main thread at start-up does not
reach the model's own thread, where a tree ensemble would then spin one OpenMP thread per core in
every worker. The model here reports the count its calling thread would use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server

pytestmark = pytest.mark.e2e

SOURCE = """
import numpy as np
import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime, as a tree ensemble model does
from threadpoolctl import threadpool_info


def score(x):
    openmp = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"]
    return {"openmp_threads": np.full(len(x), openmp[0] if openmp else -1)}
"""


def test_the_models_thread_uses_the_cores_divided_among_the_workers(
    home: Path, tmp_path: Path, start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: the limit and OpenMP's default are the same number")
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(SOURCE)
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    reference = np.ones((4, 2))
    register(
        workspace, code, Registration("probe", reference_data=reference, entrypoint="probe:score")
    )
    for name in ("OMP_NUM_THREADS", "DOCKYARD_MODEL_THREADS", "DOCKYARD_WORKERS"):
        monkeypatch.delenv(name, raising=False)  # as users run it: nothing set
    # Every batch on the model's own thread, as for any model slower than the inline budget.
    server = start_server(home, "probe:1", "--model-option", "probe.inline_budget_ms=0")
    body = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    answers = {
        httpx.post(f"{server.url}/v2/models/probe/infer", json=body, timeout=30).json()["outputs"][
            0
        ]["data"][0]
        for _ in range(8)
    }
    workers = cores  # the default: one worker per core
    assert answers == {max(1, cores // workers)}
