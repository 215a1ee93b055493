"""The prediction log's writer process (``process.WriterProcess``): forked from the worker at
``start``, it writes the rows the worker ships it as the log's own thread would, under its own
process id, and tells the worker what it wrote; when it dies, the worker's thread takes over and
nothing the worker still held is lost; what cannot be pickled is shed and counted. A log never
closed does not hold up its process's exit, and a worker killed while a later child holds the
pipe still has its writer write what it received and exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dockyard.home import Home
from dockyard.monitoring.predlog import PredictionLog, process, read_predictions
from dockyard.monitoring.predlog.process import ChildGone, WriterProcess
from monitoring.test_predlog import TENSORS, version_of
from monitoring.test_predlog_columns import MIXED, ORDER
from waiting import wait_for

VERSIONS = (version_of("fraud", 1), version_of("fraud", 2))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def _segments(home: Home) -> set[str]:
    """The process ids that named the segments written."""
    return {path.name.split("-")[0] for path in (home.root / "predictions").rglob("*.parquet")}


def _dead(pid: int) -> bool:
    """Whether our child ``pid`` has died (a zombie until the log's thread reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True  # reaped


async def _serve(log: PredictionLog, rounds: int) -> int:
    """Append every layout of ``MIXED`` under both versions ``rounds`` times, pausing between
    rounds for the log's thread to ship and flush; the rows appended."""
    rows = 0
    for round_ in range(rounds):
        for version in VERSIONS:
            for name, make in MIXED:
                inputs, outputs = make()
                log.append(
                    version, f"{round_}-{version.version}-{name}", "p", 0.01, inputs, outputs
                )
                rows += len(outputs["predict"])
        await asyncio.sleep(0.3)
    return rows


async def test_the_writer_process_writes_what_the_thread_writes(home: Home, tmp_path: Path) -> None:
    """The same requests through a log writing from a child process and through one writing
    from its thread: the same rows; the child's process id names the segments, and the worker
    learns the rows written and the child's CPU."""
    reference = Home(tmp_path / "reference").ensure()
    logs = {
        "process": PredictionLog(home.root / "predictions", flush_s=0.2, process=True),
        "thread": PredictionLog(reference.root / "predictions", flush_s=0.2),
    }
    for log in logs.values():
        await log.start()
        appended = await _serve(log, rounds=3)
        await log.close()
        assert (log.written_rows, log.shed_rows, log.pending_rows) == (appended, 0, 0)
    assert logs["process"].writer_seconds > 0
    assert _segments(reference) == {str(os.getpid())}
    assert logs["process"]._child is None  # closed
    (child,) = _segments(home)
    assert child != str(os.getpid())
    written, expected = (
        read_predictions(h, "fraud").drop_columns(["time"]).sort_by(ORDER)
        for h in (home, reference)
    )
    assert written.num_rows == appended
    assert written.equals(expected)


async def test_when_the_writer_process_dies_the_thread_writes(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed once it has written the first rows, the child is not waited for: what the worker
    appends after its death is written by its thread, under the worker's own process id, none
    shed."""
    log = PredictionLog(home.root / "predictions", flush_s=0.2, process=True)
    await log.start()
    first = await _serve(log, rounds=1)
    await asyncio.to_thread(wait_for, lambda: log.written_rows == first, "the child's rows", 10)
    child = log._child
    assert child is not None
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    # Dead before the next append: rows shipped to a child still dying are lost (and counted).
    await asyncio.to_thread(wait_for, lambda: _dead(child.pid), "the child dead", 10)
    with caplog.at_level(logging.ERROR, "dockyard.monitoring.predlog.writer"):
        second = await _serve(log, rounds=1)
        await log.close()
    assert (log.written_rows, log.shed_rows, log.pending_rows) == (first + second, 0, 0)
    assert _segments(home) == {str(child.pid), str(os.getpid())}
    assert "the writer process ended (killed by signal 9)" in caplog.text
    assert read_predictions(home, "fraud").num_rows == first + second


def test_the_error_of_a_dead_child_s_pipe_is_collected_safely(home: Home) -> None:
    """Shipping to a child that died fails; that error, caught up in a reference cycle as
    errors logged with their traceback are, is collected without harm (on Python 3.12.1,
    ``Connection.send``'s buffer in its traceback crashed the garbage collector: a segfault)."""
    child = WriterProcess.fork(PredictionLog(home.root / "predictions"))
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: _dead(child.pid), "the child dead", 10)
    with pytest.raises(ChildGone, match="killed by signal 9") as raised:
        child.ship([np.zeros(1 << 16)])
    error = raised.value
    error.cycle = error  # type: ignore[attr-defined]
    del error, raised
    gc.collect()


async def test_a_writer_process_that_stops_answering_is_given_up(
    home: Home, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that does not answer a flush (stopped here, hung in life) is killed once the
    answer's time is up; the rows shipped to it are counted shed, and the thread writes the
    rest."""
    monkeypatch.setattr(process, "ANSWER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(process, "STOP_TIMEOUT_S", 0.5)
    log = PredictionLog(home.root / "predictions", flush_s=0.2, process=True)
    await log.start()
    child = log._child
    assert child is not None
    assert child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)
    with caplog.at_level(logging.ERROR, "dockyard.monitoring.predlog.writer"):
        first = await _serve(log, rounds=1)
        await asyncio.to_thread(wait_for, lambda: log._child is None, "the child given up", 10)
        second = await _serve(log, rounds=1)
        await log.close()
    assert (log.written_rows, log.shed_rows, log.pending_rows) == (second, first, 0)
    assert "ended (no answer within 0.5 s, killed by signal 9)" in caplog.text
    assert _segments(home) == {str(os.getpid())}
    assert read_predictions(home, "fraud").num_rows == second


async def test_rows_that_cannot_be_shipped_are_shed_and_the_rest_written(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    """A request holding an object pickle cannot carry (queued by reference, shipped with what
    was queued beside it) is shed with those, counted and logged; later rows are written."""
    log = PredictionLog(home.root / "predictions", flush_s=0.2, process=True)
    await log.start()
    version = version_of("vision", 1, TENSORS)
    unpicklable = np.array([threading.Lock()], object)
    logits = {"logits": np.zeros((1, 3), np.float32)}
    with caplog.at_level(logging.ERROR, "dockyard.monitoring.predlog.writer"):
        log.append(version, "lock", "p", 0.01, {"tag": unpicklable}, logits)
        await asyncio.to_thread(wait_for, lambda: log.shed_rows == 1, "the row shed", 10)
        written = await _serve(log, rounds=1)
        await log.close()
    assert (log.written_rows, log.shed_rows, log.pending_rows) == (written, 1, 0)
    assert "1 rows could not be shipped and are shed" in caplog.text
    assert log.written_rows == read_predictions(home, "fraud").num_rows


WORKER = f"""
import asyncio, multiprocessing, os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from dockyard.monitoring.predlog import PredictionLog, writer
from monitoring.test_predlog import tabular_request, version_of

writer.GATHER_REQUESTS = 1  # the one request is queued as it is appended

async def main(root, ending):
    log = PredictionLog(Path(root), flush_s=60, process=True)
    await log.start()
    inputs, outputs = tabular_request(2000, 0)
    log.append(version_of("fraud", 1), "r", "p", 0.01, inputs, outputs)
    await asyncio.sleep(0.5)  # past a block's rows, it is queued: the log's thread ships it
    print(log._child.pid, os.getpgid(log._child.pid), flush=True)
    if ending == "killed":
        holder = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        holder.start()  # holds the log's pipe, as a later fork of a worker would
        print(holder.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _worker(home: Home, ending: str) -> list[int]:
    """Run ``WORKER`` (a log with a writer process, a request of 2,000 rows shipped to it and
    not flushed) ending as ``ending`` says; the pids it printed (child, its group, holder)."""
    printed = home.root / "printed"
    with printed.open("w") as out:  # not a pipe: the children would hold it open
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(home.root / "predictions"), ending],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    text = printed.read_text()
    assert done.returncode == (-signal.SIGKILL if ending == "killed" else 0), text
    return [int(pid) for pid in text.split()]


def test_a_log_never_closed_does_not_hold_up_its_process_exit(home: Home) -> None:
    """A worker that ends without closing its log (no graceful stop ran): multiprocessing ends
    the daemon child at exit, and the process exits at once instead of waiting on it."""
    began = time.monotonic()
    child, group = _worker(home, "returns")
    assert time.monotonic() - began < 20
    assert group == child  # its own group: the server's group signals reach the worker only
    assert wait_for(lambda: _dead(child), "the child gone", 10)


def test_a_killed_worker_s_writer_writes_what_it_received_and_exits(home: Home) -> None:
    """Killed (SIGKILL) while a process it forked later still holds the pipe, so that the
    child never sees the pipe close: the child notices its worker is gone, writes the rows it
    was shipped, and exits."""
    child, _, holder = _worker(home, "killed")
    try:
        assert wait_for(lambda: _dead(child), "the child gone", 10)
        assert not _dead(holder)  # the pipe was still held while the child left
    finally:
        os.kill(holder, signal.SIGKILL)
    assert read_predictions(home, "fraud").num_rows == 2000
