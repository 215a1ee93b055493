"""SIGTERM to ``dockyard serve``: every request already sent gets its answer, its rows reach the
prediction log, and the server exits 0 — with one worker and with two."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from dockyard.home import Home
from dockyard.monitoring.predlog.reader import read_predictions
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server

pytestmark = pytest.mark.e2e
SLOW_S = 1.5
REQUESTS = 6
SLOW_SOURCE = """
import os, time


def score(x):
    time.sleep(float(os.environ.get("DOCKYARD_TEST_SLOW_S", "0")))
    return {"score": x.sum(axis=1)}
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_sigterm_drains_in_flight_requests_flushes_the_log_and_exits_0(
    home: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SLOW_SOURCE)
    x = np.random.default_rng(2).normal(size=(20, 3))
    workspace = open_unprotected(home)
    register(
        workspace,
        code,
        Registration("slow", reference_data=x, entrypoint="scorer:score", alias="production"),
    )
    monkeypatch.setenv("DOCKYARD_TEST_SLOW_S", str(SLOW_S))
    server = start_server(home, "--workers", str(workers))
    body = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1] * 3}]}

    def ask(index: int) -> httpx.Response:
        headers = {"X-Request-ID": f"drain-{index}"}
        return httpx.post(
            f"{server.url}/v2/models/slow/infer", json=body, headers=headers, timeout=30
        )

    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = [pool.submit(ask, index) for index in range(REQUESTS)]
        time.sleep(SLOW_S / 3)  # every request is in flight
        server.process.send_signal(signal.SIGTERM)
        responses = [answer.result() for answer in answers]
    assert server.process.wait(timeout=30) == 0, server.output()
    assert [response.status_code for response in responses] == [200] * REQUESTS
    logged = read_predictions(Home(home), "slow", columns=["request_id"])
    ids = set(logged.column("request_id").to_pylist())
    assert {f"drain-{index}" for index in range(REQUESTS)} <= ids
