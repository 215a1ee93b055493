"""The disaster-recovery drill: a backup taken by ``dockyard backup create`` while a real server
serves and logs requests, the home deleted, ``dockyard backup restore`` onto the same path, the
server started again: the same outputs, byte for byte, for the same inputs, an audit chain that
verifies, and the logged rows back. Run on SQLite, and on PostgreSQL where a test server is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, make_url

from dockyard.home import Home
from dockyard.monitoring.predlog import read_predictions
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e
POSTGRES_ENV = "DOCKYARD_TEST_POSTGRES_URL"
LOGGED_REQUESTS = 20


def _infer(url: str, x: np.ndarray) -> tuple[str, bytes]:
    """The request id the server gave a prediction, and the bytes of its outputs."""
    body = {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.tolist()}],
    }
    answer = httpx.post(f"{url}/v2/models/lr/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    outputs = answer.content.split(b'"outputs":', 1)[1]
    assert b'"id"' not in outputs
    return answer.headers["x-request-id"], outputs


def _dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dockyard_command(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _wait_logged(home: Path, ids: set[str]) -> None:
    for _ in range(100):
        table = read_predictions(Home(home), "lr", columns=["request_id"])
        if ids <= set(table.column("request_id").to_pylist()):
            return
        threading.Event().wait(0.1)
    raise AssertionError("the server did not log the requests")


class Load:
    """A client sending requests in a loop until stopped; counts failures."""

    def __init__(self, url: str, x: np.ndarray) -> None:
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, x))
        self._thread.start()

    def _run(self, url: str, x: np.ndarray) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                _infer(url, x[self.sent % len(x) : self.sent % len(x) + 1])
            except (AssertionError, httpx.HTTPError):
                self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def postgres_database() -> Iterator[tuple[str, str]]:
    """Two new, empty PostgreSQL databases (the original home's and the restore's)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore are not installed")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    names = [f"dockyard_dr_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as connection:
        for name in names:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = make_url(url)
    yield tuple(  # type: ignore[misc]
        base.set(database=name).render_as_string(hide_password=False) for name in names
    )
    with admin.connect() as connection:
        for name in names:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _drill(
    home: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_urls: tuple[str, str] | None = None,
) -> None:
    """The drill on ``home``; ``database_urls``: its PostgreSQL registry and the empty database
    to restore it into (None: SQLite in the home)."""
    if database_urls is not None:
        monkeypatch.setenv("DOCKYARD_DATABASE_URL", database_urls[0])
    x = tabular_data[0]
    probe = x[:10]
    server = start_server(home, "--workers", "1")
    probe_id, before = _infer(server.url, probe)
    ids = {_infer(server.url, x[i : i + 2])[0] for i in range(LOGGED_REQUESTS)} | {probe_id}
    _wait_logged(home, ids)
    load = Load(server.url, x)
    backup = tmp_path / "drill.tar.gz"
    created = _dockyard("backup", "create", "--home", str(home), "--out", str(backup))
    load.stop()
    assert created.returncode == 0, created.stderr
    assert load.sent > 0
    assert load.failed == 0
    server.stop()

    shutil.rmtree(home)
    into = ["--database-url", database_urls[1]] if database_urls else []
    restored = _dockyard("backup", "restore", str(backup), "--home", str(home), *into)
    assert restored.returncode == 0, restored.stderr
    if database_urls is not None:
        monkeypatch.setenv("DOCKYARD_DATABASE_URL", database_urls[1])
    again = start_server(home, "--workers", "1")
    assert _infer(again.url, probe)[1] == before
    audit = _dockyard("audit", "verify", "--home", str(home))
    assert audit.returncode == 0, audit.stderr
    assert "audit trail intact" in audit.stdout
    logged = set(
        read_predictions(Home(home), "lr", columns=["request_id"])["request_id"].to_pylist()
    )
    assert ids <= logged


def test_disaster_recovery_drill_on_sqlite(
    served: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    unprotected_config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _drill(served, start_server, tabular_data, tmp_path, monkeypatch)


@pytest.mark.postgres
def test_disaster_recovery_drill_on_postgresql(
    tmp_path: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    postgres_database: tuple[str, str],
    unprotected_config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.linear_model import LogisticRegression

    from dockyard.services.register import Registration, register
    from homes import open_unprotected

    original, fresh = postgres_database
    home = tmp_path / "home"
    x, y = tabular_data
    workspace = open_unprotected(home, database_url=original)
    register(
        workspace,
        LogisticRegression(max_iter=500).fit(x, y),
        Registration("lr", reference_data=x[:50], alias="production"),
    )
    workspace.store.close()
    _drill(home, start_server, tabular_data, tmp_path, monkeypatch, (original, fresh))
