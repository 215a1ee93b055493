"""``isolate = true`` over real HTTP: a model that crashes its process fails only that request, with
a 503 (its process is replaced), as does a request whose model process is killed under it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server, children

pytestmark = pytest.mark.e2e

SOURCE = """
import os
import signal
import time

import numpy as np


def score(x):
    if (x[:, 0] == -1).any():
        os.kill(os.getpid(), signal.SIGSEGV)
    if (x[:, 0] == -2).any():
        time.sleep(3600)
    return {"score": x.sum(axis=1), "pid": np.full(len(x), os.getpid())}
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def _body(first: float) -> dict[str, object]:
    row = [first, 1.0, 2.0]
    return {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": row}]}


def test_a_crashing_or_hanging_model_fails_alone_and_its_process_is_replaced(
    home: Path, tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SOURCE)
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    reference = np.abs(np.random.default_rng(0).normal(size=(20, 3)))
    register(
        workspace,
        code,
        Registration("fragile", reference_data=reference, entrypoint="scorer:score"),
    )
    server = start_server(
        home,
        "fragile:1",
        "--workers",
        "1",
        "--model-option",
        "fragile.isolate=true",
        "--model-option",
        "fragile.prediction_timeout_s=2",
    )
    url = f"{server.url}/v2/models/fragile/infer"

    def pid_of_model() -> int:
        response = httpx.post(url, json={**_body(3.0), "outputs": [{"name": "pid"}]})
        assert response.status_code == 200, response.text
        return int(response.json()["outputs"][0]["data"][0])

    first = pid_of_model()
    assert first in children(server.process.pid)

    crashed = httpx.post(url, json=_body(-1.0))
    assert crashed.status_code == 503
    assert crashed.headers["Retry-After"] == "1"
    assert "died while predicting (killed by SIGSEGV)" in crashed.json()["error"]
    assert not _alive(first)
    second = pid_of_model()
    assert second != first

    # Killed from outside (kill -9, the OOM killer) under a request: that request gets its 503.
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(httpx.post(url, json=_body(-2.0), timeout=30))
    )
    waiting.start()
    time.sleep(0.5)  # the request is in the child, which sleeps
    os.kill(second, signal.SIGKILL)
    waiting.join(timeout=10)
    assert not waiting.is_alive(), "the request hung after its model process was killed"
    assert answers[0].status_code == 503
    assert "died while predicting (killed by SIGKILL)" in answers[0].json()["error"]
    second = pid_of_model()

    started = time.monotonic()
    hung = httpx.post(url, json=_body(-2.0), timeout=30)
    assert hung.status_code == 504
    assert "within 2 s" in hung.json()["error"]
    assert time.monotonic() - started < 20
    _wait_until_gone(second)  # killed, not left running the endless prediction
    third = pid_of_model()
    assert third != second

    server.stop()
    _wait_until_gone(third)
    assert "died while predicting (killed by SIGSEGV)" in server.output()
