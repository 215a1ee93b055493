"""``isolate = true`` over real HTTP: a model that crashes its process fails only that request."""

from __future__ import annotations

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
    assert crashed.status_code == 500
    assert "died while predicting (killed by SIGSEGV)" in crashed.json()["error"]
    assert not _alive(first)
    second = pid_of_model()
    assert second != first

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
