"""Waiting for what a real server does in its own time (a worker replaced, rows written, a
report stored): poll a condition until it holds, and fail naming what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EVERY_S = 0.05


def wait_for(condition: Callable[[], T], what: str = "the condition", timeout_s: float = 30.0) -> T:
    """The first truthy value ``condition`` returns, polled every ``EVERY_S``; an assertion error
    naming ``what`` once ``timeout_s`` has passed without one."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(EVERY_S)
