"""``dockyard serve --workers 2``: both serve, a dead worker is replaced, model memory is shared."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e
WEIGHT_BYTES = 200_000 * 30 * 8  # the training matrix a brute-force KNN keeps: 48 MB


def _shared_bytes(pid: int) -> int:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return fields["Shared_Clean"] + fields["Shared_Dirty"]


def test_two_workers_share_memory_and_replace_a_dead_one(
    home: Path, start_server: Callable[..., Server]
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200_000, 30))
    y = (x[:, 0] > 0).astype(np.int64)
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(x, y)
    workspace = open_unprotected(home)
    register(workspace, model, Registration(name="knn", reference_data=x[:50], alias="production"))

    server = start_server(home, "--workers", "2")
    wait_for(lambda: len(server.workers()) == 2)
    body = {
        "inputs": [
            {"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": x[:1].tolist()}
        ]
    }
    for _ in range(20):
        response = httpx.post(f"{server.url}/v2/models/knn/infer", json=body)
        assert response.status_code == 200, response.text

    for worker in server.workers():
        # The model's weights were loaded once in the parent and are shared copy-on-write.
        assert _shared_bytes(worker) > WEIGHT_BYTES

    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.workers() and len(server.workers()) == 2)
    wait_for(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200)
    for _ in range(20):
        assert httpx.post(f"{server.url}/v2/models/knn/infer", json=body).status_code == 200


def test_the_workers_stop_when_the_supervisor_is_killed(
    home: Path, start_server: Callable[..., Server]
) -> None:
    """A supervisor killed outright (SIGKILL: no handler runs) takes its workers with it: each
    gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``), drains and exits, and none is left
    serving the port unowned."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    model = KNeighborsClassifier(n_neighbors=3).fit(x, (x[:, 0] > 0).astype(np.int64))
    workspace = open_unprotected(home)
    register(workspace, model, Registration(name="knn", reference_data=x[:50], alias="production"))
    server = start_server(home, "--workers", "2")
    wait_for(lambda: len(server.workers()) == 2)
    workers = server.workers()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"  # exited, not yet reaped by init

    wait_for(lambda: all(gone(pid) for pid in workers), timeout_s=20.0)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/ready", timeout=2)
