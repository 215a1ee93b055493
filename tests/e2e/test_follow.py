"""A running ``dockyard serve`` follows the registry: an alias moved by another process is served
within seconds, under load, without a failed request; a version that cannot load is not swapped
in and says why; a model being loaded is not ready; forked workers keep sharing model memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from chaos.traffic import Traffic, traffic
from dockyard.security.principals import local_user
from dockyard.services.changes import set_alias
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e
X = np.random.default_rng(3).normal(size=(200, 3))
Y = (X[:, 0] > 0).astype(np.int64)
BODY = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [0.1] * 3}]}
SWAP_WITHIN_S = 10.0
SLOW_SOURCE = """
import os, time


def score(x):
    time.sleep(float(os.environ.get("DOCKYARD_TEST_SLOW_S", "0")))
    return {"score": x.sum(axis=1)}
"""


@pytest.fixture(autouse=True)
def _follow_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers poll the registry every half second (the default is 2 s)."""
    monkeypatch.setenv("DOCKYARD_FOLLOW_INTERVAL_S", "0.5")


def _two_versions(home: Path) -> None:
    """``lr`` versions 1 and 2, ``production`` on 1."""
    workspace = open_unprotected(home)
    register(workspace, LogisticRegression().fit(X, Y), Registration("lr", reference_data=X))
    register(workspace, LogisticRegression(C=0.1).fit(X, Y), Registration("lr", reference_data=X))
    set_alias(workspace, local_user(), "lr", "production", 1)


def _move(home: Path, version: int, model: str = "lr") -> None:
    """Move ``production`` from this process, as another process sharing the registry would."""
    set_alias(open_unprotected(home), local_user(), model, "production", version)


def _only_version_2(load: Traffic) -> bool:
    """Whether the next 100 answers all came from version 2."""
    old = load.tally.versions["1"]
    load.wait_for(100)
    return load.tally.versions["1"] == old


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_an_alias_moved_under_load_is_served_with_no_failed_request(
    home: Path, start_server: Callable[..., Server], workers: int
) -> None:
    _two_versions(home)
    server = start_server(home, "--workers", str(workers))
    url = f"{server.url}/v2/models/lr/infer"
    with traffic(url, BODY, clients=4) as load:
        load.wait_for(50)
        assert set(load.tally.versions) == {"1"}
        _move(home, 2)
        # Within seconds every answer comes from version 2: version 1's count stops growing.
        wait_for(lambda: _only_version_2(load), timeout_s=SWAP_WITHIN_S)
    tally = load.tally
    assert tally.failed_clearly == 0, tally.kinds
    assert tally.lost == 0, tally.lost_examples
    assert tally.versions["2"] >= 100  # the last 100 answers at least
    assert "no longer served" in server.output() or workers > 1


def test_a_version_that_cannot_load_is_not_swapped_in_and_says_why(
    home: Path, start_server: Callable[..., Server]
) -> None:
    _two_versions(home)
    workspace = open_unprotected(home)
    broken = register(
        workspace, LogisticRegression(C=5.0).fit(X, Y), Registration("lr", reference_data=X)
    )
    blob = home / "artifacts" / broken.artifact.digest[:2] / broken.artifact.digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    server = start_server(home, "--workers", "2")
    url = server.url
    with traffic(f"{url}/v2/models/lr/infer", BODY, clients=2) as load:
        load.wait_for(20)
        _move(home, 3)
        # Both workers are replaced by ones that report the failure.
        wait_for(
            lambda: "every worker serves the registry's new versions" in server.output(),
            timeout_s=SWAP_WITHIN_S,
        )
        load.wait_for(50)
    assert set(load.tally.versions) == {"1"}
    assert load.tally.failed_clearly == load.tally.lost == 0

    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/lr/ready").status_code == 200
    ready = httpx.get(f"{url}/v2/models/lr/versions/3/ready")
    assert ready.status_code == 503
    assert "is corrupt" in ready.json()["error"]
    described = httpx.get(f"{url}/v2/models/lr/versions/3").json()
    assert described["state"] == "failed"
    assert "is corrupt" in described["reason"]
    served = httpx.get(f"{url}/v2/models/lr").json()
    assert served["versions"] == ["1"]
    assert served["state"] == "ready"
    # Logged once, though the registry moves again (for another reason) after it.
    _move(home, 2)
    wait_for(
        lambda: httpx.post(f"{url}/v2/models/lr/infer", json=BODY).json()["model_version"] == "2",
        timeout_s=SWAP_WITHIN_S,
    )
    assert server.output().count("not serving lr@production (version 3)") == 1


def test_a_model_being_loaded_is_not_ready_until_it_serves(
    home: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _two_versions(home)
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SLOW_SOURCE)
    workspace = open_unprotected(home)
    register(workspace, code, Registration("slow", reference_data=X, entrypoint="scorer:score"))
    # The server's warm-up of ``slow`` takes 3 s: long enough to see it loading. It serves every
    # model's production alias: lr only, until slow gets one.
    monkeypatch.setenv("DOCKYARD_TEST_SLOW_S", "3")
    server = start_server(home, "--workers", "1")
    assert httpx.get(f"{server.url}/v2/models/slow/ready").status_code == 404
    _move(home, 1, model="slow")
    wait_for(
        lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 503,
        timeout_s=SWAP_WITHIN_S,
    )
    loading = httpx.get(f"{server.url}/v2/models/slow/ready")
    assert loading.status_code == 503
    assert "is loading" in loading.json()["error"]
    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=BODY).status_code == 200
    wait_for(
        lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
        timeout_s=SWAP_WITHIN_S,
    )
    assert httpx.get(f"{server.url}/v2/models/slow/ready").status_code == 200


def _version(url: str, body: dict[str, Any]) -> str:
    """The ``model_version`` that answers ``body``."""
    version: str = httpx.post(url, json=body).json()["model_version"]
    return version


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return fields


def test_two_workers_still_share_model_memory_after_a_swap(
    home: Path, start_server: Callable[..., Server]
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150_000, 30))
    y = (x[:, 0] > 0).astype(np.int64)
    workspace = open_unprotected(home)
    for seed in (1, 2):  # two 36 MB models
        model = KNeighborsClassifier(n_neighbors=3 + seed, algorithm="brute").fit(x, y)
        register(workspace, model, Registration("knn", reference_data=x[:50]))
    _move(home, 1, model="knn")
    server = start_server(home, "--workers", "2")
    body = {
        "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [0.0] * 30}]
    }
    wait_for(lambda: len(server.workers()) == 2, timeout_s=SWAP_WITHIN_S)
    before = set(server.workers())
    _move(home, 2, model="knn")
    url = f"{server.url}/v2/models/knn/infer"
    # The supervisor replaces the workers one after the other: ten answers in a row from version 2
    # can all come from the first new worker while the old second one still serves. Wait until
    # both serving workers are new ones.
    wait_for(lambda: _replaced(server, before), timeout_s=30)
    for _ in range(20):  # each worker predicts: the weights are resident in both
        assert _version(url, body) == "2"
    memory = _workers_memory(server)
    pss = sum(fields["Pss"] for fields in memory)
    one = max(fields["Rss"] for fields in memory)
    assert pss <= 1.3 * one, (pss, one)


def _replaced(server: Server, before: set[int]) -> bool:
    """Whether two workers serve and none of them is one of ``before``."""
    workers = set(server.workers())
    return len(workers) == 2 and not workers & before


def _workers_memory(server: Server) -> list[dict[str, int]]:
    """``_memory`` of the two workers, read again while a process of the swap (a retired worker,
    the supervisor's trial child) vanishes between listing and reading."""
    deadline = time.monotonic() + 30
    while True:
        try:
            memory = [_memory(pid) for pid in server.workers()]
        except (FileNotFoundError, ProcessLookupError):
            memory = []
        if len(memory) == 2:
            return memory
        assert time.monotonic() < deadline, "two settled workers"
        time.sleep(0.2)
