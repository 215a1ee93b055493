"""Isolated runtimes: predictions run in a forked child; a crash, a hang or an error stays there."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dockyard.errors import InvalidInput, ModelCrashed, PredictionFailed, PredictionTimeout
from dockyard.reliability.isolation import IsolatedRuntime, describe_exit
from dockyard.serving.batching import Batcher

CRASH, HANG, RAISE, REFUSE = -1.0, -2.0, -3.0, -4.0


class Doubler:
    """A real runtime: doubles column 0, reports the pid that ran it, misbehaves on cue."""

    framework = "test"
    output_names = ("double", "pid")
    fork_safe = True

    def __init__(self, hang_marker: Path | None = None) -> None:
        self.hang_marker = hang_marker
        """A file created when a prediction starts to hang, for tests that wait for that."""

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        first = x[:, 0]
        if (first == CRASH).any():
            faulthandler.disable()  # pytest's traceback dump would only add noise
            os.kill(os.getpid(), signal.SIGSEGV)
        if (first == HANG).any():
            if self.hang_marker is not None:
                self.hang_marker.touch()
            time.sleep(3600)
        if (first == RAISE).any():
            raise ZeroDivisionError("boom")
        if (first == REFUSE).any():
            raise InvalidInput("column 0 must not be -4")
        return {"double": first * 2, "pid": np.full(len(x), os.getpid())}


def _rows(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64).reshape(-1, 1)


@pytest.fixture
def isolated() -> Iterator[IsolatedRuntime]:
    runtime = IsolatedRuntime(Doubler(), name="doubler:1", timeout_s=1.0)
    yield runtime
    runtime.close()


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_predictions_run_in_a_child_process(isolated: IsolatedRuntime) -> None:
    result = isolated.predict(_rows(1, 2, 3), ())
    np.testing.assert_array_equal(result["double"], [2, 4, 6])
    child = int(result["pid"][0])
    assert child != os.getpid()
    assert child == isolated.child_pid
    assert isolated.predict(_rows(4), ())["pid"][0] == child  # the same child serves again
    assert isolated.starts == 1


def test_a_crash_fails_the_call_and_the_next_call_gets_a_new_child(
    isolated: IsolatedRuntime,
) -> None:
    first = int(isolated.predict(_rows(1), ())["pid"][0])
    with pytest.raises(ModelCrashed, match="died while predicting .killed by SIGSEGV."):
        isolated.predict(_rows(CRASH), ())
    assert not _alive(first)
    second = int(isolated.predict(_rows(5), ())["pid"][0])
    assert second != first
    assert isolated.starts == 2


def test_a_hang_times_out_and_the_child_is_killed(isolated: IsolatedRuntime) -> None:
    first = int(isolated.predict(_rows(1), ())["pid"][0])
    started = time.monotonic()
    with pytest.raises(PredictionTimeout, match="did not answer within 1 s"):
        isolated.predict(_rows(HANG), ())
    assert time.monotonic() - started < 10
    assert not _alive(first)
    np.testing.assert_array_equal(isolated.predict(_rows(3), ())["double"], [6])


def test_model_errors_come_back_as_dockyard_errors(isolated: IsolatedRuntime) -> None:
    with pytest.raises(PredictionFailed, match="test model failed to predict: ZeroDivisionError"):
        isolated.predict(_rows(RAISE), ())
    with pytest.raises(InvalidInput, match="column 0 must not be -4"):
        isolated.predict(_rows(REFUSE), ())
    assert isolated.starts == 1  # errors do not cost the child


def test_a_child_that_died_while_idle_is_replaced_without_failing_a_request(
    isolated: IsolatedRuntime,
) -> None:
    isolated.start()
    first = isolated.child_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    while _alive(first):
        time.sleep(0.01)
    np.testing.assert_array_equal(isolated.predict(_rows(2), ())["double"], [4])
    assert isolated.child_pid != first


def test_close_stops_the_child(isolated: IsolatedRuntime) -> None:
    isolated.start()
    child = isolated.child_pid
    assert child is not None
    isolated.close()
    assert not _alive(child)
    assert isolated.child_pid is None


def test_a_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """A worker killed by SIGKILL leaves no model process behind: the child sees its pipe close."""
    read_end, write_end = os.pipe()
    parent = os.fork()
    if parent == 0:  # the "worker": start an isolated child, report its pid, wait to be killed
        os.close(read_end)
        runtime = IsolatedRuntime(Doubler(), name="doubler:1", timeout_s=1.0)
        runtime.start()
        os.write(write_end, str(runtime.child_pid).encode())
        os.close(write_end)
        time.sleep(3600)
        os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 32))
    os.close(read_end)
    assert _alive(child)
    os.kill(parent, signal.SIGKILL)
    os.waitpid(parent, 0)
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the model process outlived its parent"
        time.sleep(0.02)


def test_a_gpu_runtime_cannot_be_isolated() -> None:
    class OnGpu(Doubler):
        fork_safe = False

    with pytest.raises(InvalidInput, match="cannot be forked"):
        IsolatedRuntime(OnGpu(), name="gpu:1", timeout_s=1.0)


def test_exit_descriptions() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"


async def test_in_a_batch_only_the_request_that_crashes_the_model_fails(
    isolated: IsolatedRuntime,
) -> None:
    batcher = Batcher(isolated.predict, name="doubler:1", max_batch_size=64)
    values = [1.0, 2.0, CRASH, 4.0]
    outcomes = await asyncio.gather(
        *(batcher.submit(_rows(v), ("double",)) for v in values), return_exceptions=True
    )
    batcher.close()
    assert isinstance(outcomes[2], ModelCrashed)
    for value, outcome in zip(values, outcomes, strict=True):
        if value != CRASH:
            assert isinstance(outcome, dict)
            assert float(outcome["double"][0]) == 2 * value


def test_close_does_not_wait_for_a_hung_prediction(tmp_path: Path) -> None:
    marker = tmp_path / "hanging"
    runtime = IsolatedRuntime(Doubler(marker), name="doubler:1", timeout_s=600.0)
    runtime.start()
    child = runtime.child_pid
    assert child is not None
    caller = threading.Thread(target=_expect_crash, args=(runtime,))
    caller.start()
    while not marker.exists():
        time.sleep(0.01)
    started = time.monotonic()
    runtime.close()
    caller.join(10)
    assert not caller.is_alive()
    assert time.monotonic() - started < 10
    assert not _alive(child)


def _expect_crash(runtime: IsolatedRuntime) -> None:
    with pytest.raises(ModelCrashed):
        runtime.predict(_rows(HANG), ())
