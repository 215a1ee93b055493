"""The chaos suite: real servers under continuous load while something breaks — a worker killed,
an artifact corrupted, the database locked, a model slowed down or crashing, the disk full, the
whole server restarted, the alias moved. Each scenario records sent / succeeded / failed clearly /
lost (``traffic.py`` says which is which) and asserts on them: nothing is ever lost."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from chaos.traffic import CLIENT_DEADLINE_S, Tally, classify, traffic
from dockyard.errors import StorageFull
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server, dockyard_command
from waiting import wait_for

pytestmark = pytest.mark.e2e

Record = Callable[[str, Tally], None]
FLOW = 40
"""Successes to wait for before and after each fault: the traffic flows."""
LR_FEATURES = 30

FICKLE = """
import os
import time
from pathlib import Path

MODE = Path({mode!r})


def score(x):
    mode = MODE.read_text() if MODE.exists() else ""
    if mode == "slow":
        time.sleep(3)
    elif mode == "crash":
        os._exit(3)
    return {{"score": x.sum(axis=1)}}
"""
"""A Python-function model whose behaviour the test switches by writing a file: normal, slow
(3 s a batch) or crashing its process."""


def _body(features: int) -> dict[str, object]:
    tensor = {"name": "input-0", "shape": [1, features], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": [0.5] * features}]}


@pytest.fixture
def lr_home(home: Path, tabular_data: tuple[np.ndarray, np.ndarray]) -> Path:
    """A home with ``lr`` (a logistic regression) under ``production``."""
    x, y = tabular_data
    workspace = open_unprotected(home)
    model = LogisticRegression(max_iter=500).fit(x, y)
    register(workspace, model, Registration("lr", reference_data=x[:50], alias="production"))
    return home


@pytest.fixture
def fickle_home(lr_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``lr_home`` plus ``fickle`` (``FICKLE``) under ``production``; and its mode file."""
    mode = tmp_path / "fickle-mode"
    code = tmp_path / "fickle"
    code.mkdir()
    (code / "fickle.py").write_text(FICKLE.format(mode=str(mode)))
    reference = np.random.default_rng(0).normal(size=(20, 3))
    register(
        open_unprotected(lr_home),
        code,
        Registration(
            "fickle", reference_data=reference, entrypoint="fickle:score", alias="production"
        ),
    )
    return lr_home, mode


def _infer_url(server: Server, model: str) -> str:
    return f"{server.url}/v2/models/{model}/infer"


def test_kill_a_worker(lr_home: Path, start_server: Callable[..., Server], record: Record) -> None:
    server = start_server(lr_home, "--workers", "2")
    with traffic(_infer_url(server, "lr"), _body(LR_FEATURES)) as load:
        load.wait_for(FLOW)
        before = server.workers()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(server.workers()) == 2 and victim not in server.workers())
        load.wait_for(FLOW)
    record("kill a worker (kill -9, 2 workers)", load.tally)
    assert load.tally.lost == 0, load.tally.lost_examples
    # Only the requests in flight on the killed worker's connections can fail, each at once.
    assert load.tally.failed_clearly <= load.clients
    assert load.tally.succeeded >= 2 * FLOW


def test_corrupt_an_artifact(
    lr_home: Path, start_server: Callable[..., Server], record: Record, tmp_path: Path
) -> None:
    server = start_server(lr_home, "--workers", "1")
    workspace = open_unprotected(lr_home)
    version = workspace.store.resolve(parse_ref("lr@production"))
    blob = workspace.artifacts.path_for(version.artifact.digest)
    with traffic(_infer_url(server, "lr"), _body(LR_FEATURES)) as load:
        load.wait_for(FLOW)
        blob.chmod(0o600)
        blob.write_bytes(b"not the model any more")
        load.wait_for(FLOW)  # the loaded model keeps serving
        second = subprocess.run(
            [*dockyard_command(), "serve", "lr@production", "--no-auth", "--port", "1"],
            env={**os.environ, "DOCKYARD_HOME": str(lr_home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    record("corrupt an artifact", load.tally)
    assert load.tally.lost == 0, load.tally
    assert load.tally.failed_clearly == 0, load.tally
    # A server that would load the damaged file refuses it, in one line naming the artifact.
    assert second.returncode == 9, second.stderr
    assert "corrupt" in second.stderr
    assert "Traceback" not in second.stderr


def test_lock_the_database(
    lr_home: Path, start_server: Callable[..., Server], record: Record
) -> None:
    server = start_server(lr_home, "--workers", "1")
    management = Tally()
    with traffic(_infer_url(server, "lr"), _body(LR_FEATURES)) as load:
        load.wait_for(FLOW)
        with _exclusive_lock(lr_home / "dockyard.db"):
            change = {"description": "changed while the database was locked"}
            writer = threading.Thread(
                target=_patch, args=(f"{server.url}/api/models/lr", change, management)
            )
            writer.start()
            load.wait_for(FLOW)  # predictions never touch the database
            time.sleep(2)
        writer.join(CLIENT_DEADLINE_S + 5)
        load.wait_for(FLOW)
    record("lock the database (write lock, 2 s)", load.tally)
    record("  a model update during the lock", management)
    assert load.tally.lost == 0, load.tally
    assert load.tally.failed_clearly == 0, load.tally
    assert management.lost == 0, management.lost_examples
    assert management.sent == 1, management.lost_examples


def test_make_a_model_slow(
    fickle_home: tuple[Path, Path],
    start_server: Callable[..., Server],
    record: Record,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_BREAKER_RESET_S", "1")  # it opens after 5 failures: retry soon
    home, mode = fickle_home
    server = start_server(home, "--workers", "1", "--model-option", "fickle.prediction_timeout_s=1")
    with (
        traffic(_infer_url(server, "lr"), _body(LR_FEATURES), clients=2) as other,
        traffic(_infer_url(server, "fickle"), _body(3), clients=4) as slow,
    ):
        slow.wait_for(FLOW)
        mode.write_text("slow")
        wait_for(lambda: slow.tally.failed_clearly >= 4)
        other.wait_for(FLOW)  # the other model keeps answering meanwhile
        mode.unlink()
        slow.wait_for(FLOW, timeout_s=30)
    record("make a model slow (3 s, deadline 1 s)", slow.tally)
    record("  another model on the same server", other.tally)
    assert slow.tally.lost == 0, slow.tally.lost_examples
    assert set(slow.tally.kinds) <= {"504", "503"}, slow.tally.kinds
    assert other.tally.lost == 0, other.tally
    assert other.tally.failed_clearly == 0, other.tally


def test_make_a_model_crash(
    fickle_home: tuple[Path, Path],
    start_server: Callable[..., Server],
    record: Record,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_BREAKER_RESET_S", "1")  # it opens after 5 failures: retry soon
    home, mode = fickle_home
    server = start_server(home, "--workers", "1", "--model-option", "fickle.isolate=true")
    with (
        traffic(_infer_url(server, "lr"), _body(LR_FEATURES), clients=2) as other,
        traffic(_infer_url(server, "fickle"), _body(3), clients=2) as crashing,
    ):
        crashing.wait_for(FLOW)
        mode.write_text("crash")
        wait_for(lambda: crashing.tally.failed_clearly >= 4)
        other.wait_for(FLOW)
        mode.unlink()
        crashing.wait_for(FLOW, timeout_s=30)  # its process was replaced
    record("make a model crash (os._exit, isolated)", crashing.tally)
    record("  another model on the same server", other.tally)
    assert crashing.tally.lost == 0, crashing.tally.lost_examples
    assert other.tally.lost == 0, other.tally
    assert other.tally.failed_clearly == 0, other.tally


def test_fill_the_disk(
    tmp_path: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    record: Record,
) -> None:
    with _small_filesystem(tmp_path / "disk", megabytes=48) as disk:
        home = disk / "home"
        x, y = tabular_data
        workspace = open_unprotected(home)
        model = LogisticRegression(max_iter=500).fit(x, y)
        register(workspace, model, Registration("lr", reference_data=x[:50], alias="production"))
        server = start_server(home, "--workers", "1")
        try:
            with traffic(_infer_url(server, "lr"), _body(LR_FEATURES)) as load:
                load.wait_for(FLOW)
                filler = _fill(disk)
                load.wait_for(4 * FLOW)  # the prediction log's writes fail; answers do not
                refused = subprocess.run(
                    [*dockyard_command(), "models", "register", str(_saved(model, tmp_path))]
                    + ["--name", "lr", "--reference", str(_reference(x, tmp_path))],
                    env={**os.environ, "DOCKYARD_HOME": str(home)},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                update = Tally()
                change = {"description": "changed on a full disk"}
                _patch(f"{server.url}/api/models/lr", change, update)
                filler.unlink()
                load.wait_for(FLOW)
        finally:
            server.stop()
        versions = open_unprotected(home).store.list_versions("lr")
    record("fill the disk", load.tally)
    record("  a model update on the full disk", update)
    assert load.tally.lost == 0, load.tally
    assert load.tally.failed_clearly == 0, load.tally
    # The registration that found no space failed in one clear line, and left nothing behind.
    assert refused.returncode == StorageFull.exit_code, refused.stderr
    assert "no space left" in refused.stderr
    assert refused.stderr.startswith("error:")
    assert "Traceback" not in refused.stderr
    assert [version.version for version in versions] == [1]
    assert update.lost == 0, update.lost_examples  # answered, with an error naming the cause
    assert set(update.kinds) == {"507"}, update.kinds  # StorageFull


def test_restart_the_whole_server(lr_home: Path, tmp_path: Path, record: Record) -> None:
    first = Server(lr_home, ["--workers", "2"], tmp_path / "first.log")
    port = first.port
    second: Server | None = None
    try:
        with traffic(_infer_url(first, "lr"), _body(LR_FEATURES), pause_s=0.005) as load:
            load.wait_for(FLOW)
            first.stop()
            assert first.process.returncode == 0, first.output()
            second = Server(lr_home, ["--workers", "2"], tmp_path / "second.log", port=port)
            load.wait_for(FLOW)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    record("restart the whole server (SIGTERM, start)", load.tally)
    assert load.tally.lost == 0, load.tally.lost_examples
    # Between the two servers nobody listens: refused at once, never left hanging.
    assert set(load.tally.kinds) <= {"ConnectError", "RemoteProtocolError", "ReadError"}


@pytest.mark.usefixtures("unprotected_config")
def test_move_the_alias(
    lr_home: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    record: Record,
) -> None:
    server = start_server(lr_home, "--workers", "2")
    x, y = tabular_data
    workspace = open_unprotected(lr_home)
    retrained = LogisticRegression(C=0.1, max_iter=500).fit(x, y)
    register(workspace, retrained, Registration("lr", reference_data=x[:50]))
    with traffic(_infer_url(server, "lr"), _body(LR_FEATURES)) as load:
        load.wait_for(FLOW)
        moved = subprocess.run(
            [*dockyard_command(), "models", "alias", "lr", "production", "2"],
            env={**os.environ, "DOCKYARD_HOME": str(lr_home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert moved.returncode == 0, moved.stderr
        wait_for(lambda: load.tally.versions["2"] >= FLOW)
    record("move the alias (2 workers)", load.tally)
    assert load.tally.lost == 0, load.tally.lost_examples
    assert load.tally.failed_clearly == 0, load.tally
    assert set(load.tally.versions) == {"1", "2"}


def _patch(url: str, body: dict[str, str], tally: Tally) -> None:
    """PATCH ``body`` to ``url`` and count the outcome (a 200 with any JSON body succeeds)."""
    try:
        outcome: httpx.Response | Exception = httpx.patch(url, json=body, timeout=CLIENT_DEADLINE_S)
    except Exception as exc:
        outcome = exc
    if isinstance(outcome, httpx.Response) and outcome.status_code == 200:
        tally.sent += 1
        tally.succeeded += 1
        return
    classify(tally, outcome)


@contextlib.contextmanager
def _exclusive_lock(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``database`` for the block (in WAL mode readers go on)."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@contextlib.contextmanager
def _small_filesystem(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` at ``path`` (skips where this machine does not allow mounting)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited filesystem here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Write zeros to a file on ``disk`` until it is full; the file."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)
            handle.flush()
    return filler


def _saved(model: LogisticRegression, folder: Path) -> Path:
    import skops.io

    path = folder / "lr.skops"
    skops.io.dump(model, path)
    return path


def _reference(x: np.ndarray, folder: Path) -> Path:
    path = folder / "reference.csv"
    header = ",".join(f"x{i}" for i in range(x.shape[1]))
    np.savetxt(path, x[:50], delimiter=",", header=header, comments="")
    return path
