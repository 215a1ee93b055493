"""A trial run in a throwaway forked child: what the supervisor learns of a new version before
its workers serve it, without predicting in the parent.

The parent's models are shared copy-on-write by every worker it forks. Predicting in the parent
would start the frameworks' thread pools there (GNU OpenMP's pool does not survive a fork: a
worker forked after it could hang in its first prediction) and touch pages the workers share; a
model that crashes its process would take the supervisor down. The child inherits the loaded
model, runs the trial, reports how it went on a pipe and exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable

REPORT_BYTES = 4096
"""The most of a failure's message that comes back."""


def trial_in_child(trial: Callable[[], None], timeout_s: float) -> str | None:
    """Run ``trial`` in a forked child; None when it returned, else why not (its exception, a
    crash, or no answer within ``timeout_s``: the child is then killed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's lines run after the fork
        os.close(read_end)
        failure = on_new_thread(trial)
        try:
            os.write(write_end, failure or b"ok")
        finally:
            os._exit(1 if failure else 0)
    os.close(write_end)
    try:
        answer = _read(read_end, timeout_s)
    finally:
        os.close(read_end)
        _reap(pid)
    if answer is None:
        return f"no answer within {timeout_s:g} s"
    if answer == b"ok":
        return None
    return answer.decode(errors="replace") or "the process died"


def on_new_thread(trial: Callable[[], None]) -> bytes:
    """Run ``trial`` on a thread started in this (forked) process, as a worker's model thread
    is; empty bytes when it returned, else its exception (type and message). On the thread that
    forked, a framework that ran a parallel region in the parent (GNU OpenMP: XGBoost loading a
    booster) waits forever for the parent's pool threads, which the fork did not copy."""
    failure = b""

    def run() -> None:
        nonlocal failure
        try:
            trial()
        except BaseException as exc:
            failure = f"{type(exc).__name__}: {exc}".encode(errors="replace")[:REPORT_BYTES]
            failure = failure or type(exc).__name__.encode()

    thread = threading.Thread(target=run, name="dockyard-trial")
    thread.start()
    thread.join()
    return failure


def _read(fd: int, timeout_s: float) -> bytes | None:
    """What the child wrote before it closed the pipe (exited); None past the deadline."""
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, REPORT_BYTES)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    return None


def _reap(pid: int) -> None:
    """Kill the child if it is still there, and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
