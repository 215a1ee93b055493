"""The home's monitoring jobs (drift, evaluations, alert rules) in a process of their own.

A drift round reads the prediction log's window: seconds of CPU when the window holds millions
of rows. On a thread of a serving worker it would hold that worker's interpreter lock against its
event loop, and land in the latency of whichever requests arrive meanwhile (and of that worker
only, so one of two servers on a home would pay for both). ``serve`` forks this process once the
models are loaded, before any worker; a watcher thread starts a new one when it dies of anything
but a stop, and the process leaves by itself when ``serve`` is gone (``getppid`` changes), so it
never holds the home's scheduler lock for a dead server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

from dockyard.monitoring.scheduler import CLOSE_WAIT_S
from dockyard.reliability import logs

logger = logging.getLogger("dockyard.monitoring")

PARENT_POLL_S = 0.5
"""How often the process checks that ``serve`` is still its parent."""
RESTART_BACKOFF_S = 1.0
STOP_TIMEOUT_S = CLOSE_WAIT_S + 5.0
"""How long a stop waits for the round in progress before killing the process."""
NICENESS = 10
"""The jobs' scheduling priority below the workers': a drift round takes the CPU the serving
workers leave, not the CPU they need."""


class BackgroundJob(Protocol):
    """Something the monitoring process runs on threads of its own: the monitoring scheduler,
    the rollout watch, the scheduled backups."""

    def start(self) -> None: ...

    def close(self) -> None: ...


class MonitorProcess:
    """Runs ``jobs()`` (built in the child, after the fork) until stopped; restarts on a crash."""

    def __init__(
        self, jobs: Callable[[], Sequence[BackgroundJob]], log_level: str, log_format: str
    ) -> None:
        self._jobs = jobs
        self._log_level = log_level
        self._log_format = log_format
        self._pid = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The process running the jobs now (0 before ``start``)."""
        return self._pid

    def start(self) -> None:
        """Fork the process (call it from the main thread, before the workers are forked)."""
        self._pid = self._fork()
        self._watcher = threading.Thread(
            target=self._watch, name="dockyard-monitor-watch", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """Ask the process to finish its round and leave; kill it if it takes too long."""
        self._stopping.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        if self._watcher is None:
            return
        self._watcher.join(STOP_TIMEOUT_S)
        if self._watcher.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._watcher.join()

    def _fork(self) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._child(parent)
        logger.info("monitoring process started (pid %d)", pid)
        return pid

    def _child(self, parent: int) -> NoReturn:
        code = 0
        try:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: stop.set())
            logs.configure(self._log_level, self._log_format)  # the listener thread is new
            os.nice(NICENESS)
            jobs = self._jobs()
            for job in jobs:
                job.start()
            while not stop.wait(PARENT_POLL_S) and os.getppid() == parent:
                pass
            for job in jobs:
                job.close()
        except BaseException:
            logger.exception("the monitoring process crashed")
            code = 1
        finally:
            logs.shutdown()  # what is queued is written: os._exit runs no atexit hooks
            os._exit(code)

    def _watch(self) -> None:
        """Wait for the process; start a new one unless it was stopped (exit status 0)."""
        while True:
            try:
                _, status = os.waitpid(self._pid, 0)
            except ChildProcessError:
                return
            if self._stopping.is_set() or status == 0:
                return
            logger.warning(
                "the monitoring process (pid %d) exited with status %d; starting a new one",
                self._pid,
                status,
            )
            if self._stopping.wait(RESTART_BACKOFF_S):
                return
            self._pid = self._fork()
