"""A time limit on a call made on the main thread, so a slow prediction cannot hold the event loop.

Fast models run on the event-loop thread (a thread hand-off would cost more than the prediction).
A model that is fast on most inputs but slow on one would then block every other request, health
probes included, for as long as it takes. ``call_with_limit`` arms a one-shot ``ITIMER_REAL``
timer around the call; when it fires, the ``SIGALRM`` handler raises ``Overrun`` inside the call
(Python runs signal handlers on the main thread, and a sleeping or waiting call is woken), and the
caller moves the work to a thread. Arming and disarming are two ``setitimer`` system calls, about
a microsecond in all.

Limits of the mechanism: only the main thread can be interrupted (elsewhere the call simply runs);
a call stuck inside one native function that never returns to Python is interrupted only when it
does (``isolate = true`` runs such models in a child process); and when something else already
handles ``SIGALRM`` (a test runner's timeout), Dockyard leaves it alone and runs the call unguarded.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_deadline = float("inf")
"""When the running limited call overruns (monotonic clock); infinity while none runs. Python runs a
signal's handler at its next check, which can fall after the call that armed the timer: an alarm
handled before the deadline of the call running then is a stale one, and is ignored."""


class Overrun(BaseException):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """The call ran past its limit and was interrupted.

    A BaseException, like KeyboardInterrupt, so a model's own ``except Exception`` cannot swallow
    it and report a wrong answer.
    """


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if time.monotonic() >= _deadline:
        raise Overrun


def can_interrupt() -> bool:
    """Whether calls on this thread can be interrupted: the main thread, with SIGALRM free (its
    handler is installed now) or already ours. Ask once, when setting up; asking costs ~4 µs."""
    if threading.get_ident() != threading.main_thread().ident:
        return False
    handler = signal.getsignal(signal.SIGALRM)
    if handler is signal.SIG_DFL:
        signal.signal(signal.SIGALRM, _on_alarm)
        return True
    return handler is _on_alarm


def call_with_limit(limit_s: float, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``call(*args)``; raise ``Overrun`` in it once it has run ``limit_s`` seconds.

    With a limit of 0, or off the main thread, the call just runs. Pass a limit only where
    ``can_interrupt()`` said yes.
    """
    global _deadline
    if not limit_s or threading.get_ident() != threading.main_thread().ident:
        return call(*args, **kwargs)
    _deadline = time.monotonic() + limit_s
    try:  # the process may be descheduled past the limit before setitimer even returns
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        return call(*args, **kwargs)
    finally:
        _deadline = float("inf")
        signal.setitimer(signal.ITIMER_REAL, 0)
