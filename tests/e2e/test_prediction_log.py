"""The prediction log of a real ``dockyard serve --workers 2`` under traffic from concurrent
clients: a graceful stop (SIGTERM) leaves exactly the rows the clients got answers for; a worker
killed (SIGKILL) loses only what it answered within its last flush interval; the log reads back
over HTTP (JSON, CSV, Parquet) and through ``dockyard monitor log`` (local and ``--url``) with the
values the clients received."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.home import Home
from dockyard.monitoring.predlog import read_predictions
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e

FLUSH_S = 1.0
WRITE_MARGIN_S = 0.5
"""Beyond the flush interval, what a killed worker may also lose: the time its last write took
and the scheduling of a shared machine."""
CLIENTS = 4
REQUESTS_PER_CONNECTION = 20


@dataclass(frozen=True)
class Answered:
    """A request a client got a 200 answer to: its id, rows, and when the answer arrived."""

    request_id: str
    rows: int
    at: float
    outputs: dict[str, list[object]]


class Traffic:
    """Clients sending 1-3 row requests in a loop on threads of their own until stopped,
    recording every answer they receive; refused connections (a stopping server) are retried."""

    def __init__(self, url: str, x: np.ndarray, headers: dict[str, str] | None = None) -> None:
        self.answered: list[Answered] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(url, x, headers or {}, seed))
            for seed in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, url: str, x: np.ndarray, headers: dict[str, str], seed: int) -> None:
        choose = random.Random(seed)
        while not self._stop.is_set():
            # A new connection every REQUESTS_PER_CONNECTION requests: each is accepted by
            # whichever worker is free then, so every worker gets some of the traffic.
            with httpx.Client(timeout=10, headers=headers) as http:
                self._send(http, url, x, choose)

    def _send(self, http: httpx.Client, url: str, x: np.ndarray, choose: random.Random) -> None:
        for _ in range(REQUESTS_PER_CONNECTION):
            if self._stop.is_set():
                return
            rows = choose.randint(1, 3)
            start = choose.randrange(len(x) - rows)
            data = x[start : start + rows].tolist()
            inputs = [{"name": "x", "shape": [rows, x.shape[1]], "datatype": "FP64", "data": data}]
            try:
                response = http.post(f"{url}/v2/models/lr/infer", json={"inputs": inputs})
            except httpx.TransportError:
                time.sleep(0.02)
                return  # a new connection
            if response.status_code == 200:
                outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
                self.answered.append(
                    Answered(response.headers["x-request-id"], rows, time.monotonic(), outputs)
                )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def rows(self) -> set[tuple[str, int]]:
        return {(a.request_id, row) for a in self.answered for row in range(a.rows)}


def logged_rows(home: Path) -> list[tuple[str, int]]:
    table = read_predictions(Home(home), "lr", columns=["request_id", "row"])
    return list(zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True))


@pytest.fixture
def logging_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", str(FLUSH_S))


def test_a_graceful_stop_under_traffic_logs_exactly_what_was_answered(
    served: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    logging_on: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "600")  # nothing is written before the stop
    server = start_server(served, "--workers", "2")
    wait_for(lambda: len(server.workers()) == 2)
    traffic = Traffic(server.url, tabular_data[0])
    try:
        wait_for(lambda: len(traffic.answered) >= 300)
        assert not logged_rows(served)
        server.stop()  # SIGTERM while the clients keep sending
        assert server.process.returncode == 0, server.output()
    finally:
        traffic.stop()
    logged = logged_rows(served)
    assert len(logged) == len(set(logged)), "a row was logged twice"
    assert set(logged) == traffic.rows()
    workers = {request_id.split("-")[0] for request_id, _ in logged}
    assert len(workers) == 2, "both workers answered and logged"


def test_a_killed_worker_loses_at_most_its_last_flush_interval(
    served: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    logging_on: None,
) -> None:
    server = start_server(served, "--workers", "2")
    wait_for(lambda: len(server.workers()) == 2)
    traffic = Traffic(server.url, tabular_data[0])
    try:
        victim = server.workers()[0]
        prefix = f"{victim:x}-"  # request ids start with the answering worker's pid

        def logged_before_the_last_interval() -> int:
            cutoff = time.monotonic() - FLUSH_S - WRITE_MARGIN_S
            return sum(
                1
                for a in list(traffic.answered)
                if a.request_id.startswith(prefix) and a.at < cutoff
            )

        time.sleep(3 * FLUSH_S)  # several flushes of both workers
        # On a busy machine a worker may answer slowly: kill it once it has answered plenty.
        wait_for(lambda: logged_before_the_last_interval() > 100, timeout_s=60)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in server.workers())
        wait_for(lambda: len(server.workers()) == 2)  # its replacement
        time.sleep(FLUSH_S)
        server.stop()
    finally:
        traffic.stop()
    answered = {a.request_id: a for a in traffic.answered}
    logged = {request_id for request_id, _ in logged_rows(served)}
    assert logged <= set(answered)
    lost = [answered[request_id] for request_id in set(answered) - logged]
    assert all(a.request_id.startswith(prefix) for a in lost), "only the killed worker lost rows"
    window_start = killed_at - FLUSH_S - WRITE_MARGIN_S
    late = [a for a in lost if a.at < window_start]
    assert not late, f"{len(late)} of {len(lost)} lost answers came before the last interval"
    victims = [a for a in answered.values() if a.request_id.startswith(prefix)]
    kept = [a for a in victims if a.at < window_start]
    assert len(kept) > 100, "the killed worker had answered (and logged) plenty before"
    in_window = [a for a in victims if window_start <= a.at <= killed_at]
    assert len(lost) <= len(in_window)


@pytest.fixture
def logged_server(
    served: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Server, Traffic, dict[str, str]]:
    """A server requiring keys with 2 workers logging every request (flushed every 0.2 s), a few
    hundred answered requests in its log, and API keys by role."""
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    workspace = Workspace.open(load_settings({"home": served}, env={}))
    keys = {
        role.value: workspace.keys.create(local_user(), f"test-{role.value}", role)[1]
        for role in (Role.PREDICTOR, Role.AUDITOR, Role.DEPLOYER)
    }
    workspace.store.engine.dispose()
    server = start_server(served, "--workers", "2", auth=True)
    predictor = {"Authorization": f"Bearer {keys['predictor']}"}
    traffic = Traffic(server.url, tabular_data[0], predictor)
    wait_for(lambda: len(traffic.answered) >= 200)
    traffic.stop()
    expected = len(traffic.rows())
    wait_for(lambda: len(logged_rows(served)) == expected, timeout_s=10)
    return server, traffic, keys


def test_the_log_reads_back_over_http_in_each_format(
    logged_server: tuple[Server, Traffic, dict[str, str]],
) -> None:
    server, traffic, keys = logged_server
    url = f"{server.url}/api/models/lr/predictions"
    auditor = {"Authorization": f"Bearer {keys['auditor']}"}
    answered = {a.request_id: a for a in traffic.answered}
    rows = len(traffic.rows())

    as_json = httpx.get(url, params={"limit": 100_000}, headers=auditor)
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    records = as_json.json()
    assert len(records) == rows
    for record in records:
        sent = answered[record["request_id"]]
        assert record["output.predict"] == sent.outputs["predict"][record["row"]]
        assert record["output.predict_proba"] == pytest.approx(
            sent.outputs["predict_proba"][2 * record["row"] : 2 * record["row"] + 2]
        )
        assert record["principal"] == "key:test-predictor"
        assert record["version"] == 1
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)

    newest = httpx.get(url, params={"limit": 5, "format": "csv"}, headers=auditor)
    assert newest.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="lr-predictions.csv"' in newest.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(newest.text)))
    assert [(r["request_id"], int(r["row"])) for r in table] == [
        (r["request_id"], r["row"]) for r in records[-5:]
    ]
    assert json.loads(table[0]["output.predict_proba"]) == records[-5]["output.predict_proba"]

    parquet = httpx.get(url, params={"format": "parquet", "version": 1}, headers=auditor)
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(pa.BufferReader(parquet.content)).num_rows == min(rows, 1000)

    assert httpx.get(url, params={"version": 2}, headers=auditor).json() == []
    predictor = {"Authorization": f"Bearer {keys['predictor']}"}
    assert httpx.get(url, headers=predictor).status_code == 403
    for params, message in [
        ({"format": "xml"}, "format must be one of csv, json, parquet"),
        ({"limit": 0}, "limit must be between 1 and 100000"),
        ({"version": 2**40}, "version must be between 1 and"),
        ({"since": "soon"}, "duration 'soon'"),
    ]:
        refused = httpx.get(url, params=params, headers=auditor)
        assert refused.status_code == 400, refused.text
        assert message in refused.json()["error"]
    missing = httpx.get(f"{server.url}/api/models/nope/predictions", headers=auditor)
    assert missing.status_code == 404

    # A KServe V1 request (one tensor per feature) is logged in the same columns.
    instances = [[0.5] * 30, [-0.25] * 30]
    v1 = httpx.post(
        f"{server.url}/v1/models/lr:predict", json={"instances": instances}, headers=predictor
    )
    assert v1.status_code == 200, v1.text
    request_id = v1.headers["x-request-id"]

    def logged_v1() -> list[dict[str, object]]:
        newest = httpx.get(url, params={"limit": 2}, headers=auditor).json()
        return [r for r in newest if r["request_id"] == request_id]

    wait_for(lambda: len(logged_v1()) == 2, timeout_s=10)
    rows = logged_v1()
    assert [(r["row"], r["input.x0"], r["input.x29"]) for r in rows] == [
        (0, 0.5, 0.5),
        (1, -0.25, -0.25),
    ]
    assert [r["output.predict"] for r in rows] == v1.json()["predictions"]


def test_monitor_log_exports_locally_and_through_a_server(
    logged_server: tuple[Server, Traffic, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server, traffic, keys = logged_server
    home = str(server.home)
    code, out, err = run_cli(capsys, "monitor", "log", "lr", "--since", "1h", "--home", home)
    assert code == 0, err
    local = list(csv.DictReader(io.StringIO(out)))
    assert {(r["request_id"], int(r["row"])) for r in local} == traffic.rows()
    assert "input.x0" in local[0]
    assert "output.predict_proba" in local[0]

    target = tmp_path / "log.parquet"
    code, _, err = run_cli(
        capsys, "monitor", "log", "lr", "--format", "parquet", "-o", str(target), "--home", home
    )
    assert code == 0
    assert err == f"wrote {target}\n"
    assert pq.read_table(target).num_rows == len(local)

    monkeypatch.setenv("DOCKYARD_API_KEY", keys["deployer"])
    code, out, err = run_cli(
        capsys, "monitor", "log", "lr", "--format", "json", "--limit", "7", "--url", server.url
    )
    assert code == 0, err
    remote = json.loads(out)
    assert [(r["request_id"], r["row"]) for r in remote] == [
        (r["request_id"], int(r["row"])) for r in local[-7:]
    ]
    monkeypatch.setenv("DOCKYARD_API_KEY", keys["predictor"])
    code, out, err = run_cli(capsys, "monitor", "log", "lr", "--url", server.url)
    assert code == 3
    assert err.endswith("may not read predictions\n")
    code, out, err = run_cli(capsys, "monitor", "log", "nope", "--home", home)
    assert code != 0
    assert "nope" in err
