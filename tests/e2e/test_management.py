"""The management API: register over HTTP (the same service as the CLI), inspect, move aliases."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server
from tables import csv_bytes as _csv

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("unprotected_config")]


def test_register_inspect_and_alias_over_http(
    home: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = tabular_data
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=x[:50], alias="production"))
    server = start_server(home)
    model_file = tmp_path / "model.skops"
    skops.io.dump(logistic, model_file)
    reference = _csv(x[:80])

    created = httpx.post(
        f"{server.url}/api/models",
        data={
            "name": "lr",
            "metrics": '{"auc": 0.9}',
            "tags": '{"team": "risk"}',
            "alias": "staging",
        },
        files={
            "model": ("model.skops", model_file.read_bytes()),
            "reference": ("reference.csv", reference),
        },
        timeout=60,
    )
    assert created.status_code == 201, created.text
    version = created.json()
    assert version["version"] == 2
    assert version["metrics"] == {"auc": 0.9}
    assert version["aliases"] == ["staging"]
    assert version["created_by"] == "open:anonymous"  # --no-auth: every caller is this one
    assert version["lineage"]["data_rows"] == 80

    listed = httpx.get(f"{server.url}/api/models").json()
    assert listed[0]["name"] == "lr"
    assert listed[0]["aliases"] == {"production": 1, "staging": 2}
    detail = httpx.get(f"{server.url}/api/models/lr").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    moved = httpx.put(f"{server.url}/api/models/lr/aliases/production", json={"version": 2})
    assert moved.status_code == 200, moved.text
    assert sorted(moved.json()["aliases"]) == ["production", "staging"]
    assert httpx.get(f"{server.url}/api/models/lr/versions/7").status_code == 404

    refused = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr"},
        files={"model": ("model.pkl", pickle.dumps(logistic)), "reference": ("r.csv", reference)},
        timeout=60,
    )
    assert refused.status_code == 400
    assert "--allow-pickle" in refused.json()["error"]
    bad_json = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr", "metrics": "{nope"},
        files={"model": ("model.skops", model_file.read_bytes())},
    )
    assert bad_json.status_code == 400
    assert "metrics" in bad_json.json()["error"]
    no_name = httpx.post(
        f"{server.url}/api/models", files={"model": ("m.skops", model_file.read_bytes())}
    )
    assert no_name.status_code == 400
    assert "name" in no_name.json()["error"]
    no_reference = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr"},
        files={"model": ("model.skops", model_file.read_bytes())},
    )
    assert no_reference.status_code == 400
    assert no_reference.json()["error"].startswith("form field 'reference' is required")
    assert [v["version"] for v in httpx.get(f"{server.url}/api/models/lr").json()["versions"]] == [
        1,
        2,
    ]


def test_a_json_body_over_the_body_limit_is_refused_and_changes_nothing(
    served: Path, start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_MAX_BODY_BYTES", "1024")
    server = start_server(served)
    url = f"{server.url}/api/models/lr"

    answer = httpx.patch(url, json={"description": "x" * 2048})
    assert answer.status_code == 413, answer.text
    assert "max_body_bytes" in answer.json()["error"]
    # Without Content-Length (chunked), counted while it arrives.
    chunks = iter([b'{"description": "', b"x" * 2048, b'"}'])
    answer = httpx.patch(url, content=chunks, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert httpx.get(url).json()["description"] == ""
    assert httpx.patch(url, json={"description": "fits"}).json()["description"] == "fits"
