"""The ray backend on a real Ray cluster: ``dockyard serve --backend ray --ray-address HEAD``.

One local Ray head (``ray_cluster.RayCluster``, 2 CPUs, on 127.0.0.1) and one server in front of
it serve four models, each a Ray Serve application of its own:

- ``scaler``: a Python function that answers with the pid of the process that ran it (50 ms a
  batch), autoscaled from 1 to 2 replicas at one batch in flight per replica;
- ``pair``: the same function, two replicas, one of which the tests kill;
- ``broken``: a version whose artifact is corrupt, so its replicas cannot load it;
- ``lr``: two versions, ``production`` moved from 1 to 2 while the server serves it.

What Ray Serve reports is read by a Ray driver in a subprocess (``ServeProbe``); which processes
are replicas, from their titles (``ray::ServeReplica:APP:DEPLOYMENT``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from dockyard.security.principals import local_user
from dockyard.services.changes import set_alias
from dockyard.services.register import Registration, register
from homes import open_unprotected
from ray_cluster import (
    RayCluster,
    ServeProbe,
    foreign_connections,
    replica_pids,
    tcp_connections,
)
from servers import Server, descendants
from waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
X = np.random.default_rng(7).normal(size=(100, 3))
Y = (X[:, 0] > 0).astype(np.int64)
BODY = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [0.1] * 3}]}
PID_SOURCE = """
import os
import time

import numpy as np


def score(x):
    time.sleep(0.05)
    return {"pid": np.full(len(x), os.getpid(), dtype=np.int64)}
"""
"""A model that says which process ran it: a Ray replica's own pid, when it runs on Ray."""
OPTIONS = {
    "scaler": {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "replica_cpus": 0.5,
    },
    "pair": {"min_replicas": 2, "max_replicas": 2, "replica_cpus": 0.25},
    "broken": {"replica_cpus": 0.25},
    "lr": {"replica_cpus": 0.25},
}
"""At most 2 CPUs reserved at once: scaler 2 x 0.5, pair 2 x 0.25, lr 0.25 and its next version's
0.25 while production moves (broken's replica is gone by then)."""
SERVER_START_S = 240.0
"""Ray's start and four applications deployed one after the other, on 2 busy cores."""
SCALED_WITHIN_S = 90.0
"""Ray Serve's handle reports its load every 10 s; a new replica then starts in seconds."""
REPLACED_WITHIN_S = 90.0
"""Serve health-checks a replica every 10 s; the new one then starts in seconds."""
APPS = {model: f"dockyard-{model}-v1" for model in OPTIONS}
RETRY_PAUSE_S = 0.05
"""A client's pause after a failed request, as one retrying would (every failure is counted)."""


class Load:
    """``clients`` threads posting ``BODY`` to ``url`` back to back until the block ends; every
    answer is counted: the pids (``pid`` output) and versions that answered, and each failure."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.clients = clients
        self.succeeded = 0
        self.pids: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` more requests succeeded."""
        target = self.succeeded + count
        wait_for(lambda: self.succeeded >= target, f"{count} answers", timeout_s)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=BODY)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    time.sleep(RETRY_PAUSE_S)
                    continue
                if response.status_code != 200:
                    with self._lock:
                        self.failures.append(f"{response.status_code}: {response.text[:300]}")
                    time.sleep(RETRY_PAUSE_S)
                    continue
                body = response.json()
                with self._lock:
                    self.succeeded += 1
                    self.versions[body["model_version"]] += 1
                    for output in body["outputs"]:
                        if output["name"] == "pid":
                            self.pids.update(output["data"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    running = RayCluster(cpus=2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def probe(cluster: RayCluster) -> Iterator[ServeProbe]:
    reader = ServeProbe(cluster)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    code = tmp_path_factory.mktemp("code")
    (code / "scorer.py").write_text(PID_SOURCE)
    workspace = open_unprotected(home)
    for name in ("scaler", "pair"):
        register(
            workspace,
            code,
            Registration(name, reference_data=X, entrypoint="scorer:score", alias="production"),
        )
    broken = register(
        workspace,
        DecisionTreeClassifier(max_depth=2).fit(X, Y),
        Registration("broken", reference_data=X, alias="production"),
    )
    blob = home / "artifacts" / broken.artifact.digest[:2] / broken.artifact.digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    register(
        workspace,
        LogisticRegression().fit(X, Y),
        Registration("lr", reference_data=X, alias="production"),
    )
    register(workspace, LogisticRegression(C=0.1).fit(X, Y), Registration("lr", reference_data=X))
    return home


@pytest.fixture(scope="module")
def server(
    cluster: RayCluster, ray_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``dockyard serve`` of every model's ``production`` on the cluster, following the registry
    every half second."""
    options = [
        arg
        for model, knobs in OPTIONS.items()
        for knob, value in knobs.items()
        for arg in ("--model-option", f"{model}.{knob}={value}")
    ]
    log = tmp_path_factory.mktemp("logs") / "server.log"
    running = Server(
        ray_home,
        ["--backend", "ray", "--ray-address", cluster.address, *options],
        log,
        # Not ray_env(): the server pins its own Ray driver to loopback (a loopback address).
        env={**os.environ, **cluster.auth_env, "DOCKYARD_FOLLOW_INTERVAL_S": "0.5"},
        startup_timeout_s=SERVER_START_S,
    )
    yield running
    running.stop()


def _url(server: Server, model: str) -> str:
    return f"{server.url}/v2/models/{model}/infer"


def test_load_scales_a_model_from_one_replica_to_two_and_both_answer(
    server: Server, cluster: RayCluster, probe: ServeProbe
) -> None:
    app = APPS["scaler"]
    assert probe.running_replicas(app) == 1
    assert len(replica_pids(cluster.pids(), app)) == 1
    with Load(_url(server, "scaler"), clients=16) as load:
        wait_for(lambda: probe.running_replicas(app) == 2, "a second replica", SCALED_WITHIN_S)
        replicas = replica_pids(cluster.pids(), app)
        assert len(replicas) == 2
        wait_for(lambda: set(load.pids) >= replicas, f"answers from both of {replicas}", 30)
    assert load.failures == []
    # Every answer came from one of the two replicas: no prediction ran anywhere else.
    assert set(load.pids) == replicas
    assert replica_pids(cluster.pids(), app) == replicas


def test_a_killed_replica_is_replaced_and_no_request_fails(
    server: Server, cluster: RayCluster, probe: ServeProbe
) -> None:
    app = APPS["pair"]
    assert probe.running_replicas(app) == 2
    replicas = replica_pids(cluster.pids(), app)
    assert len(replicas) == 2
    victim = min(replicas)
    with Load(_url(server, "pair"), clients=6) as load:
        wait_for(lambda: set(load.pids) >= replicas, "answers from both replicas", 30)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = replica_pids(cluster.pids(), app)
            return len(now) == 2 and victim not in now and probe.running_replicas(app) == 2

        wait_for(replaced, "the killed replica replaced", REPLACED_WITHIN_S)
        (new,) = replica_pids(cluster.pids(), app) - replicas
        wait_for(lambda: load.pids[new] > 0, "answers from the new replica", 30)
        load.wait_for(20)
    assert load.failures == []  # the batches the killed replica held were sent again
    assert set(load.pids) == replicas | {new}


def test_a_version_whose_replicas_cannot_load_is_not_served_and_says_why(
    server: Server, cluster: RayCluster, probe: ServeProbe
) -> None:
    ready = httpx.get(f"{server.url}/v2/models/broken/versions/1/ready")
    assert ready.status_code == 503
    assert "cannot deploy broken:1 on Ray" in ready.json()["error"]
    assert "is corrupt" in ready.json()["error"]
    described = httpx.get(f"{server.url}/v2/models/broken").json()
    assert described["state"] == "failed"
    assert "is corrupt" in described["reason"]
    assert str(server.home) not in described["reason"]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(_url(server, "lr"), json=BODY).status_code == 200
    # Nothing is left of it on the cluster: neither its application nor a replica.
    wait_for(lambda: APPS["broken"] not in probe.applications(), "its application deleted", 30)
    wait_for(lambda: not replica_pids(cluster.pids(), APPS["broken"]), "its replicas stopped", 30)


def _move(home: Path, version: int) -> None:
    """Move ``lr``'s ``production``, as another process sharing the registry would."""
    set_alias(open_unprotected(home), local_user(), "lr", "production", version)


def test_an_alias_moved_while_serving_is_served_with_no_failed_request(
    server: Server, probe: ServeProbe
) -> None:
    assert probe.running_replicas("dockyard-lr-v1") == 1
    with Load(_url(server, "lr"), clients=4) as load:
        load.wait_for(20)
        assert set(load.versions) == {"1"}
        _move(server.home, 2)

        def only_version_2() -> bool:
            old = load.versions["1"]
            load.wait_for(50)
            return load.versions["1"] == old

        wait_for(only_version_2, "every answer from version 2", 60)
    assert load.failures == []
    # The server deployed version 1's application; it deletes it once version 1 is retired.
    wait_for(lambda: "dockyard-lr-v1" not in probe.applications(), "version 1's app deleted", 30)


def test_a_version_the_server_follows_to_runs_on_ray(server: Server, probe: ServeProbe) -> None:
    served = httpx.post(_url(server, "lr"), json=BODY).json()["model_version"]
    target = 1 if served == "2" else 2
    _move(server.home, target)
    wait_for(
        lambda: httpx.post(_url(server, "lr"), json=BODY).json()["model_version"] == str(target),
        f"version {target} served",
        60,
    )
    status = probe.applications().get(f"dockyard-lr-v{target}")
    assert status is not None
    assert status["status"] == "RUNNING"


def test_no_connection_of_the_cluster_or_the_server_leaves_loopback(
    server: Server, cluster: RayCluster
) -> None:
    """Last: after every test's traffic, kills and deployments."""
    assert httpx.post(_url(server, "scaler"), json=BODY).status_code == 200
    processes = cluster.pids() | {server.process.pid} | descendants(server.process.pid)
    connections = tcp_connections(processes)
    assert any(str(cluster.port) in line for line in connections)  # they do talk: over loopback
    assert foreign_connections(processes) == []
