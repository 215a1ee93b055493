"""A served optimized version answers the V2 suite exactly as its source does: the same outputs
within the tolerance, the same signature and the same datatypes, from one real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from dockyard.services.optimize import Optimization, optimize
from dockyard.services.register import Registration, register
from homes import open_unprotected
from optimizing import FEATURES, table, trained
from servers import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TOLERANCE = 1e-6
MODELS = {"hgb": ("hist-classifier", "treelite"), "lr": ("logistic", "onnx")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``hgb:1`` (HistGradientBoosting) and ``hgb:2`` (its Treelite build), ``lr:1`` (logistic
    regression) and ``lr:2`` (its ONNX build), ``hgb@production`` on the optimized one."""
    home = tmp_path_factory.mktemp("home")
    workspace = open_unprotected(home)
    for name, (kind, target) in MODELS.items():
        model, reference = trained(kind)
        register(workspace, model, Registration(name, reference_data=reference))
        alias = "production" if name == "hgb" else None
        optimize(workspace, Optimization(f"{name}:1", target=target, alias=alias, batch_size=8))
    log = tmp_path_factory.mktemp("logs") / "server.log"
    running = Server(home, ["hgb@production", "hgb:1", "lr:1", "lr:2", "--workers", "1"], log)
    yield running
    running.stop()


def _infer(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _rows() -> np.ndarray:
    x, _, _ = table(seed=11)
    return x[:32]


def _assert_same(source: dict[str, Any], optimized: dict[str, Any]) -> None:
    assert [o["name"] for o in optimized["outputs"]] == [o["name"] for o in source["outputs"]]
    for want, got in zip(source["outputs"], optimized["outputs"], strict=True):
        assert (got["datatype"], got["shape"]) == (want["datatype"], want["shape"])
        if want["datatype"].startswith("FP"):
            np.testing.assert_allclose(got["data"], want["data"], atol=TOLERANCE, rtol=0)
        else:
            assert got["data"] == want["data"]


@pytest.mark.parametrize("name", sorted(MODELS), ids=str)
def test_one_tensor_request_is_answered_alike(server: Server, name: str) -> None:
    rows = _rows()
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.tolist(),
            }
        ]
    }
    source = _infer(server, f"/v2/models/{name}/versions/1/infer", body)
    optimized = _infer(server, f"/v2/models/{name}/versions/2/infer", body)
    _assert_same(source, optimized)
    assert optimized["model_version"] == "2"


@pytest.mark.parametrize("name", sorted(MODELS), ids=str)
def test_one_tensor_per_feature_and_chosen_outputs_are_answered_alike(
    server: Server, name: str
) -> None:
    rows = _rows()
    body = {
        "inputs": [
            {"name": f"x{j}", "shape": [len(rows)], "datatype": "FP64", "data": rows[:, j].tolist()}
            for j in range(FEATURES)
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    source = _infer(server, f"/v2/models/{name}/versions/1/infer", body)
    optimized = _infer(server, f"/v2/models/{name}/versions/2/infer", body)
    assert [o["name"] for o in optimized["outputs"]] == ["predict_proba"]
    _assert_same(source, optimized)


@pytest.mark.parametrize("name", sorted(MODELS), ids=str)
def test_metadata_is_the_same(server: Server, name: str) -> None:
    source = httpx.get(f"{server.url}/v2/models/{name}/versions/1").json()
    optimized = httpx.get(f"{server.url}/v2/models/{name}/versions/2").json()
    assert optimized["inputs"] == source["inputs"]
    assert optimized["outputs"] == source["outputs"]


def test_a_bad_request_is_refused_alike(server: Server) -> None:
    body = {
        "inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}
        ]
    }
    source = httpx.post(f"{server.url}/v2/models/hgb/versions/1/infer", json=body)
    optimized = httpx.post(f"{server.url}/v2/models/hgb/versions/2/infer", json=body)
    assert optimized.status_code == source.status_code == 400
    assert optimized.json() == source.json()


def test_the_alias_serves_the_optimized_version(server: Server) -> None:
    rows = _rows()[:1]
    body = {
        "inputs": [
            {"name": "input-0", "shape": [1, FEATURES], "datatype": "FP64", "data": rows.tolist()}
        ]
    }
    answer = _infer(server, "/v2/models/hgb/infer", body)
    assert answer["model_version"] == "2"
