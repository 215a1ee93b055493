"""Circuit breakers over real HTTP: a version that keeps failing is answered 503 at once, or by its
fallback version, until a trial request after ``breaker_reset_s`` finds it mended."""

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
from servers import Server

pytestmark = pytest.mark.e2e

GOOD = """
def score(x):
    return {"score": x.sum(axis=1)}
"""
BROKEN = """
import time


def score(x):
    if (x[:, 0] == 1).any():  # the requests' rows; registration predicts other ones
        time.sleep(0.3)
        raise RuntimeError("broken")
    return {"score": x.sum(axis=1)}
"""
BODY = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
RESET_S = 1.5


def _register(workspace: Workspace, tmp_path: Path, name: str, source: str) -> None:
    code = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    code.mkdir()
    (code / "scorer.py").write_text(source)
    reference = np.abs(np.random.default_rng(0).normal(size=(20, 3)))
    register(
        workspace, code, Registration(name, reference_data=reference, entrypoint="scorer:score")
    )


@pytest.fixture
def server(
    home: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> Server:
    """``shaky`` 1 works and 2 fails, served as 2 with 1 as its fallback; ``broken`` 1 fails and
    has no fallback. Three failures in a row open a circuit, for RESET_S."""
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    _register(workspace, tmp_path, "shaky", GOOD)
    _register(workspace, tmp_path, "shaky", BROKEN)
    _register(workspace, tmp_path, "broken", BROKEN)
    monkeypatch.setenv("DOCKYARD_BREAKER_RESET_S", str(RESET_S))
    return start_server(
        home,
        "shaky:2",
        "broken:1",
        "--workers",
        "1",
        "--model-option",
        "shaky.fallback=1",
        "--model-option",
        "shaky.breaker_failures=3",
        "--model-option",
        "broken.breaker_failures=3",
    )


def _post(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(url, json=BODY)
    return response, time.monotonic() - started


def test_an_open_circuit_answers_at_once_503_or_by_the_fallback_and_lets_one_trial_through(
    server: Server,
) -> None:
    _open_without_fallback(server)
    _open_with_fallback(server)


def _open_without_fallback(server: Server) -> None:
    url = f"{server.url}/v2/models/broken/infer"
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            response, took = _post(client, url)
            assert response.status_code == 500
            assert took >= 0.3  # the model was asked
        for _ in range(5):
            response, took = _post(client, url)
            assert response.status_code == 503, response.text
            assert "broken:1 keeps failing: its circuit is open" in response.json()["error"]
            assert 1 <= int(response.headers["Retry-After"]) <= 2
            assert took < 0.25  # refused without asking the model
        time.sleep(RESET_S)
        trial, took = _post(client, url)
        assert trial.status_code == 500
        assert took >= 0.3
        again, _ = _post(client, url)
        assert again.status_code == 503  # the failed trial opened it again
    output = server.output_with("broken:1: its trial request failed")
    assert "broken:1: 3 predictions failed in a row; its circuit is open for 1.5 s" in output
    assert "broken:1: its trial request failed" in output
    # 3 failures and the trial reached the model; no refusal did
    assert output.count("failed: pyfunc model failed to predict") == 4


def _open_with_fallback(server: Server) -> None:
    url = f"{server.url}/v2/models/shaky/infer"
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            response, _ = _post(client, url)
            assert response.status_code == 500
        for _ in range(5):
            response, took = _post(client, url)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["model_version"] == "1"  # clients can tell who answered
            assert answer["outputs"][0]["data"] == [6.0]
            assert took < 0.25
    output = server.output_with("its fallback shaky:1 answers meanwhile")
    assert "shaky:2 falls back on shaky:1 while its circuit is open" in output
    assert "its fallback shaky:1 answers meanwhile" in output
