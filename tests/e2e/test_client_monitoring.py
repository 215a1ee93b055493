"""``dockyard.Client``'s monitoring methods against a real server that requires keys and logs
every request: ``predictions`` reads the log back (JSON, CSV, Parquet), ``send_feedback`` stores
labels for answered requests (in several requests when there are many), ``drift`` reports the
features whose live traffic moved; each raises the matching ``DockyardError`` when refused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard import Client
from dockyard import client as client_module
from dockyard.errors import Forbidden, InvalidInput, NotFound
from dockyard.home import Home
from dockyard.monitoring.feedback import read_labels
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 30
ROWS = 4
SHIFT = 5.0
"""How far live traffic moves feature ``x0``, in reference standard deviations."""


@dataclass(frozen=True)
class Monitored:
    """A served ``lr`` with traffic in its log: the server, its home, keys by role, and the
    answered requests (id, predictions)."""

    server: Server
    home: Path
    keys: dict[str, str]
    answered: list[tuple[str, list[int]]]

    @property
    def rows(self) -> int:
        return sum(len(predicted) for _, predicted in self.answered)

    def client(self, role: str = "admin") -> Client:
        key = self.server.admin_key if role == "admin" else self.keys[role]
        return Client(self.server.url, api_key=key)


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Monitored]:
    x = tabular_data[0]
    home = tmp_path_factory.mktemp("home")
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=x, alias="production"))
    keys = {
        role.value: workspace.keys.create(local_user(), f"test-{role.value}", role)[1]
        for role in (Role.PREDICTOR, Role.AUDITOR)
    }
    workspace.store.engine.dispose()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCKYARD_PREDICTION_LOG", "true")
        env.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
        env.setenv("DOCKYARD_DRIFT_WINDOW", "1h")
        log = tmp_path_factory.mktemp("logs") / "server.log"
        server = Server(home, ["--workers", "1"], log, auth=True)
    try:
        rng = np.random.default_rng(3)
        answered: list[tuple[str, list[int]]] = []
        predictor = {"Authorization": f"Bearer {keys['predictor']}"}
        with httpx.Client(headers=predictor, timeout=30) as http:
            for _ in range(REQUESTS):
                batch = rng.normal(size=(ROWS, x.shape[1]))
                batch[:, 0] += SHIFT
                body = {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": list(batch.shape),
                            "datatype": "FP64",
                            "data": batch.ravel().tolist(),
                        }
                    ]
                }
                answer = http.post(f"{server.url}/v2/models/lr/infer", json=body)
                assert answer.status_code == 200, answer.text
                outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
                answered.append((answer.headers["x-request-id"], outputs["predict"]))
        found = Monitored(server, home, keys, answered)
        with found.client("auditor") as auditor:
            wait_for(
                lambda: len(json.loads(auditor.predictions("lr", limit=100_000))) == found.rows
            )
        yield found
    finally:
        server.stop()


def test_predictions_read_the_log_in_each_format(monitored: Monitored) -> None:
    answered = dict(monitored.answered)
    with monitored.client("auditor") as client:
        records = json.loads(client.predictions("lr", since="1h", limit=100_000))
        assert len(records) == monitored.rows
        for record in records:
            assert record["output.predict"] == answered[record["request_id"]][record["row"]]
            assert record["principal"] == "key:test-predictor"
            assert record["version"] == 1
        assert [r["time"] for r in records] == sorted(r["time"] for r in records)

        newest = client.predictions("lr", limit=5, format="csv").decode()
        table = list(csv.DictReader(io.StringIO(newest)))
        assert [(r["request_id"], int(r["row"])) for r in table] == [
            (r["request_id"], r["row"]) for r in records[-5:]
        ]

        parquet = client.predictions("lr", version=1, format="parquet")
        assert pq.read_table(pa.BufferReader(parquet)).num_rows == monitored.rows
        assert json.loads(client.predictions("lr", version=2)) == []


def test_send_feedback_stores_labels_in_requests_of_bounded_size(
    monitored: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = [
        {"request_id": request_id, "row": row, "label": 1 - predicted[row]}
        for request_id, predicted in monitored.answered
        for row in range(len(predicted))
    ]
    sent: list[int] = []
    monkeypatch.setattr(client_module, "LABELS_PER_REQUEST", 50)
    with monitored.client("predictor") as client:
        original = client._http.request

        def counting(method: str, url: str, **kwargs: object) -> httpx.Response:
            if url.endswith("/feedback"):
                sent.append(len(kwargs["json"]["labels"]))  # type: ignore[index]
            return original(method, url, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(client._http, "request", counting)
        assert client.send_feedback("lr", labels) == len(labels)
        assert client.send_feedback("lr", []) == 0
    assert sent == [50, 50, len(labels) - 100]
    stored = read_labels(Home(monitored.home), "lr").to_pylist()
    assert {(r["request_id"], r["row"], r["label"]) for r in stored} == {
        (label["request_id"], label["row"], label["label"]) for label in labels
    }


def test_drift_flags_the_moved_feature(monitored: Monitored) -> None:
    with monitored.client() as client:
        report = client.drift("lr", window="1h", version=1)
        assert (report["model"], report["version"], report["rows"]) == ("lr", 1, monitored.rows)
        assert "x0" in report["drifted"]
        assert client.drift("lr", window=f"{ROWS}rows")["rows"] == ROWS
        assert client.drift("lr")["rows"] == monitored.rows  # the server's drift_window


def test_refusals_are_dockyard_errors(monitored: Monitored) -> None:
    with monitored.client() as client:
        with pytest.raises(NotFound, match="churn"):
            client.predictions("churn")
        with pytest.raises(NotFound, match="churn"):
            client.send_feedback("churn", [{"request_id": "x", "label": 1}])
        with pytest.raises(NotFound, match="churn"):
            client.drift("churn")
        with pytest.raises(NotFound):
            client.drift("lr", version=9)
        with pytest.raises(InvalidInput, match="format must be one of"):
            client.predictions("lr", format="xml")
        with pytest.raises(InvalidInput, match="drift window 'soon'"):
            client.drift("lr", window="soon")
    with monitored.client("predictor") as predictor, pytest.raises(Forbidden):
        predictor.predictions("lr")
