"""The main-thread time limit that stops a slow inline prediction from holding the event loop."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from dockyard.reliability.overrun import Overrun, call_with_limit, can_interrupt

# pytest-timeout's default method owns SIGALRM; these tests need it free, as in a served process.
pytestmark = pytest.mark.timeout(60, method="thread")


@pytest.fixture(autouse=True)
def _sigalrm_free() -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert can_interrupt()  # installs the handler, as a Batcher does at start-up
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_call_past_its_limit_is_interrupted_even_while_it_sleeps() -> None:
    started = time.monotonic()
    with pytest.raises(Overrun):
        call_with_limit(0.05, time.sleep, 5)
    assert time.monotonic() - started < 1.0


def test_a_model_cannot_swallow_the_interruption() -> None:
    def stubborn() -> str:
        try:
            time.sleep(5)
        except Exception:
            return "swallowed"
        return "slept"

    with pytest.raises(Overrun):
        call_with_limit(0.05, stubborn)


def test_a_quick_call_returns_its_value_and_leaves_no_timer_armed() -> None:
    assert call_with_limit(1.0, sum, [1, 2, 3]) == 6
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.05)  # a late alarm would raise here; none is pending


def test_a_zero_limit_means_no_limit() -> None:
    assert call_with_limit(0, lambda: time.sleep(0.05) or "done") == "done"


def test_off_the_main_thread_the_call_just_runs() -> None:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(can_interrupt())
            outcome.append(call_with_limit(0.01, lambda: time.sleep(0.2) or "done"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(5)
    assert outcome == [False, "done"]


def test_a_foreign_sigalrm_handler_is_left_alone() -> None:
    fired: list[int] = []

    def foreign(signum: int, frame: FrameType | None) -> None:
        fired.append(signum)

    signal.signal(signal.SIGALRM, foreign)
    assert not can_interrupt()
    assert signal.getsignal(signal.SIGALRM) is foreign
    assert fired == []
