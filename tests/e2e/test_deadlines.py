"""One slow prediction holds neither the event loop nor the other models: real server, real HTTP.

The model is fast on most inputs (so it runs on the event-loop thread) and sleeps on one value.
Its requests get their 504 at the deadline while the health probe and another model keep answering.
"""

from __future__ import annotations

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
from servers import Server

pytestmark = pytest.mark.e2e

SOURCE = """
import time


def score(x):
    if (x[:, 0] == -2).any():
        time.sleep(8)
    return {"score": x.sum(axis=1)}
"""
DEADLINE_S = 2.0
PROBE_BUDGET_S = 0.25
"""The slowest a probe may answer while the slow requests run (milliseconds when idle; generous
for a loaded 2-core CI machine, far below the seconds a blocked loop costs)."""


def _body(first: float) -> dict[str, object]:
    row = [first, 1.0, 2.0]
    return {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": row}]}


@pytest.fixture
def served_home(home: Path, tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SOURCE)
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    reference = np.abs(np.random.default_rng(0).normal(size=(20, 3)))
    for name in ("moody", "steady"):
        register(
            workspace, code, Registration(name, reference_data=reference, entrypoint="scorer:score")
        )
    return home


@pytest.mark.parametrize("isolate", [False, True], ids=["in the worker", "isolated"])
def test_a_slow_input_gets_its_504_at_the_deadline_while_everything_else_answers(
    served_home: Path, start_server: Callable[..., Server], isolate: bool
) -> None:
    server = start_server(
        served_home,
        "moody:1",
        "steady:1",
        "--workers",
        "1",
        "--model-option",
        f"moody.prediction_timeout_s={DEADLINE_S}",
        "--model-option",
        f"moody.isolate={str(isolate).lower()}",
    )
    moody = f"{server.url}/v2/models/moody/infer"
    with httpx.Client(timeout=30) as client:
        for _ in range(20):  # fast answers: the model proves it can run on the event loop
            assert client.post(moody, json=_body(1.0)).status_code == 200

    slow: list[tuple[int, float]] = []

    def send_slow() -> None:
        started = time.monotonic()
        answer = httpx.post(moody, json=_body(-2.0), timeout=30)
        slow.append((answer.status_code, time.monotonic() - started))

    senders = [threading.Thread(target=send_slow) for _ in range(3)]
    for sender in senders:
        sender.start()
    probes: list[float] = []
    with httpx.Client(timeout=30) as client:
        time.sleep(0.2)  # the slow requests are in
        while any(sender.is_alive() for sender in senders):
            for method, url, body in (
                ("GET", f"{server.url}/v2/health/ready", None),
                ("POST", f"{server.url}/v2/models/steady/infer", _body(1.0)),
            ):
                started = time.monotonic()
                answer = client.request(method, url, json=body)
                probes.append(time.monotonic() - started)
                assert answer.status_code == 200, answer.text
            time.sleep(0.05)
    for sender in senders:
        sender.join()

    assert [status for status, _ in slow] == [504, 504, 504], server.output()
    for _, took in slow:
        assert DEADLINE_S - 0.1 < took < DEADLINE_S + 1.5
    assert len(probes) > 10
    assert max(probes) < PROBE_BUDGET_S, sorted(probes)[-5:]
    if not isolate:  # an isolated model never runs on the event loop
        assert "ran past 5 ms on the event loop" in server.output()
