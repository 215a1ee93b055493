"""Model isolation: a runtime whose predictions run in a child process of the serving process.

Why a separate process:
- fault isolation: a model that kills its interpreter (a segfault in native code, the kernel's OOM
  killer, ``os._exit`` in user code) takes down only its child. The requests in that batch fail
  (the batcher then retries them one by one, so only the culprit fails again) and the next call
  forks a fresh child. A prediction past its deadline gets the child killed, not a thread leaked.
- a model that holds the GIL (scikit-learn's tree ensembles loop over their trees in Python) stops
  competing with the event loop for it, so one worker uses two cores.

The child is forked from the process that already holds the loaded model: it shares the model's
memory copy-on-write and starts in milliseconds, with nothing to import or load. Inputs and outputs
cross a pipe pickled; that costs tens of microseconds a batch, which is why isolation is opt-in.
A runtime holding a CUDA context cannot be forked and is refused.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from dockyard.errors import (
    DockyardError,
    InvalidInput,
    ModelCrashed,
    PredictionFailed,
    PredictionTimeout,
)
from dockyard.reliability.logs import QUOTES_REQUEST
from dockyard.runtimes.base import Runtime

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 2.0
"""How long a closing child gets to exit on its own before it is killed."""
_FORK = multiprocessing.get_context("fork")


class IsolatedRuntime:
    """Wraps a loaded runtime so each ``predict`` runs in a child process forked from this one.

    The child belongs to the process that started it: a worker forked later starts its own (call
    ``start`` right after the fork, before threads exist; ``predict`` also starts one when needed).
    """

    def __init__(self, runtime: Runtime, *, name: str, timeout_s: float) -> None:
        if not runtime.fork_safe:
            raise InvalidInput(
                f"{name} runs on a GPU, whose context cannot be forked into an isolated process; "
                "serve it with isolate = false"
            )
        self.framework: str = runtime.framework
        self.output_names: tuple[str, ...] = runtime.output_names
        self.fork_safe: bool = True
        self._runtime = runtime
        self._name = name
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._owner = 0
        """The pid that started the child; any other process must start its own."""
        self.starts = 0
        """Children started by this process (the first one plus restarts); counted for tests."""

    @property
    def child_pid(self) -> int | None:
        """The pid of this process's child, if one is running."""
        if self._process is None or self._owner != os.getpid():
            return None
        return self._process.pid

    def start(self) -> None:
        """Fork the child now (it is otherwise forked by the first prediction)."""
        with self._lock:
            self._connection()

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Send ``x`` to the child and wait for its answer, at most the prediction timeout."""
        with self._lock:
            conn = self._connection()
            try:
                # As bytes: a failed ``Connection.send`` (the child died) leaves a view of its
                # buffer in the error's traceback, which Python 3.12.1 crashed collecting.
                conn.send_bytes(pickle.dumps((x, tuple(outputs)), pickle.HIGHEST_PROTOCOL))
                answered = conn.poll(self._timeout_s)
                reply = conn.recv() if answered else None
            except (EOFError, OSError):
                raise ModelCrashed(
                    f"the process running {self._name} died while predicting "
                    f"({self._stop_child(kill=False)}); a new one starts with the next request"
                ) from None
            if reply is None:
                self._stop_child(kill=True)
                raise PredictionTimeout(
                    f"{self._name} did not answer within {self._timeout_s:g} s; its process was "
                    "killed and a new one starts with the next request"
                )
        status, payload = reply
        if status == "ok":
            result: dict[str, np.ndarray] = payload
            return result
        if status == "invalid":
            raise InvalidInput(payload)
        raise PredictionFailed(payload)

    def close(self) -> None:
        """Stop the child: closing the pipe tells it to exit; it is killed if it does not, or at
        once if a prediction still holds the pipe after STOP_TIMEOUT_S (its caller then fails)."""
        if not self._lock.acquire(timeout=STOP_TIMEOUT_S):
            if (process := self._process) is not None and self._owner == os.getpid():
                process.kill()
            return
        try:
            if self._process is not None and self._owner == os.getpid():
                self._stop_child(kill=False)
        finally:
            self._lock.release()

    def _connection(self) -> Connection:
        """The pipe to this process's running child, forking one first when there is none (or
        when the last one died between requests, which no request is to blame for)."""
        if self._conn is not None and self._owner == os.getpid():
            assert self._process is not None
            if self._process.is_alive():
                return self._conn
            logger.warning(
                "the idle process running %s ended (%s)", self._name, self._stop_child(kill=False)
            )
        ours, theirs = _FORK.Pipe()
        process = _FORK.Process(
            target=_serve_predictions,
            args=(self._runtime, theirs, ours),
            name=f"dockyard-model {self._name}",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._process, self._conn, self._owner = process, ours, os.getpid()
        self.starts += 1
        logger.info("started the process running %s (pid %s)", self._name, process.pid)
        return ours

    def _stop_child(self, *, kill: bool) -> str:
        """Close the pipe and reap the child (killing it if asked or if it lingers); say how it
        ended."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        assert process is not None
        assert conn is not None
        conn.close()
        if kill:
            process.kill()
        process.join(STOP_TIMEOUT_S)
        if process.exitcode is None:
            process.kill()
            process.join()
        return describe_exit(process.exitcode)


def describe_exit(code: int | None) -> str:
    """``killed by SIGSEGV`` or ``exit code 3``, from a multiprocessing exit code."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _serve_predictions(runtime: Runtime, conn: Connection, parent_end: Connection) -> None:
    """The child's loop: predict what arrives until the pipe closes (the parent closed it or died).

    Errors travel back as (kind, message): exception objects do not always survive pickling, and
    the model's own traceback is logged here, where it happened.
    """
    parent_end.close()  # else the child would keep its own pipe open and never see the parent go
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    while True:
        try:
            x, outputs = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", runtime.predict(x, outputs))
        except InvalidInput as exc:
            reply = ("invalid", exc.message)
        except DockyardError as exc:
            logger.error(
                "prediction failed: %s", exc.message, exc_info=exc.__cause__, extra=QUOTES_REQUEST
            )
            reply = ("failed", exc.message)
        except Exception as exc:
            logger.exception("prediction failed", extra=QUOTES_REQUEST)
            reply = ("failed", f"{runtime.framework} model failed to predict: {type(exc).__name__}")
        try:
            conn.send(reply)
        except OSError:
            return
        except Exception as exc:  # the outputs could not be pickled; nothing was written yet
            conn.send(("failed", f"model outputs cannot be sent back: {type(exc).__name__}"))
