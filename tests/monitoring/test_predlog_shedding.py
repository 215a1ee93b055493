"""A prediction log whose writer falls behind (a stalled disk) or fails (a path it cannot write)
sheds rows and counts them instead of holding them: what waits stays within ``log_queue_rows``,
memory does not grow with the traffic, and every row appended is either written or counted as
shed."""

from __future__ import annotations

import asyncio
import logging
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dockyard.home import Home
from dockyard.monitoring.predlog import PredictionLog, read_predictions, writer
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from registry.conftest import DIGEST, LINEAGE

FEATURES = 30
ROWS_PER_REQUEST = 100
SIGNATURE = Signature(
    inputs=tuple(TensorSpec(f"f{j}", "FP64", (-1,)) for j in range(FEATURES)),
    outputs=(TensorSpec("predict", "FP64", (-1,)),),
    tabular=True,
)
VERSION = ModelVersion(
    model="fraud",
    version=1,
    framework="sklearn",
    artifact=ArtifactRef(DIGEST, "skops"),
    signature=SIGNATURE,
    lineage=LINEAGE,
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def request(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A fresh request of 100 rows (24 KB of inputs): only the log may keep it alive."""
    x = rng.normal(size=(ROWS_PER_REQUEST, FEATURES))
    return {"x": x}, {"predict": x[:, 0].copy()}


def test_a_stalled_writer_sheds_and_counts_instead_of_growing(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()
    real_write = writer.write_segment

    def stalled_write(*args: Any) -> Path:
        disk.wait(60)  # the disk answers once the test lets it
        return real_write(*args)

    monkeypatch.setattr(writer, "write_segment", stalled_write)
    limit = 2_000
    log = PredictionLog(home.root / "predictions", flush_s=0.01, queue_rows=limit)
    rng = np.random.default_rng(0)
    requests = 200  # 20,000 rows: ten times what may wait
    tracemalloc.start()
    try:

        async def traffic() -> None:
            await log.start()
            baseline = tracemalloc.get_traced_memory()[0]
            for index in range(requests):
                inputs, outputs = request(rng)
                log.append(VERSION, f"r{index}", "p", 0.001, inputs, outputs)
                assert log.pending_rows <= limit
                if index % 20 == 0:
                    await asyncio.sleep(0.02)  # the writer takes a batch and stalls on it
            held = tracemalloc.get_traced_memory()[0] - baseline
            # What waits is at most the queue's 2,000 rows (~530 KB of arrays), not 5.3 MB.
            assert held < 1_500_000, held
            assert log.pending_rows == limit
            assert log.shed_rows == requests * ROWS_PER_REQUEST - limit
            disk.set()
            await log.close()

        asyncio.run(traffic())
    finally:
        tracemalloc.stop()
        disk.set()
    assert log.written_rows == limit
    assert log.written_rows + log.shed_rows == requests * ROWS_PER_REQUEST
    table = read_predictions(home, "fraud", columns=["request_id", "row"])
    assert table.num_rows == limit
    # Whole requests are kept or shed: the ones kept are the first that fit.
    kept = sorted(set(table["request_id"].to_pylist()), key=lambda rid: int(rid[1:]))
    assert kept == [f"r{index}" for index in range(limit // ROWS_PER_REQUEST)]


def test_a_writer_that_keeps_up_again_writes_the_rest(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk (each segment takes 50 ms): the log sheds at the peak, then catches up."""
    real_write = writer.write_segment

    def slow_write(*args: Any) -> Path:
        threading.Event().wait(0.05)
        return real_write(*args)

    monkeypatch.setattr(writer, "write_segment", slow_write)
    log = PredictionLog(home.root / "predictions", flush_s=0.01, queue_rows=1_000)
    rng = np.random.default_rng(1)

    async def traffic() -> None:
        await log.start()
        for index in range(100):  # a burst: 10,000 rows at once
            log.append(VERSION, f"burst{index}", "p", 0.001, *request(rng))
        await asyncio.sleep(0.3)
        for index in range(5):  # then a trickle the writer keeps up with
            log.append(VERSION, f"calm{index}", "p", 0.001, *request(rng))
            await asyncio.sleep(0.1)
        await log.close()

    asyncio.run(traffic())
    assert log.shed_rows == 9_000
    assert log.written_rows == 1_500
    ids = set(read_predictions(home, "fraud", columns=["request_id"])["request_id"].to_pylist())
    assert {f"calm{index}" for index in range(5)} <= ids


def test_a_failed_write_is_shed_counted_and_logged(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = home.root / "predictions"
    blocker.write_text("a file where the log's folder should be")
    log = PredictionLog(blocker)
    rng = np.random.default_rng(2)
    log.append(VERSION, "lost", "p", 0.001, *request(rng))
    with caplog.at_level(logging.ERROR, logger="dockyard.monitoring.predlog"):
        assert log.flush() == 0
    assert log.shed_rows == ROWS_PER_REQUEST
    assert log.pending_rows == 0
    assert "100 rows of fraud:1 could not be written and are shed" in caplog.text
    blocker.unlink()
    log.append(VERSION, "kept", "p", 0.001, *request(rng))
    assert log.flush() == ROWS_PER_REQUEST
    assert set(read_predictions(home, "fraud")["request_id"].to_pylist()) == {"kept"}
    assert log.written_rows == ROWS_PER_REQUEST
    assert log.shed_rows == ROWS_PER_REQUEST
