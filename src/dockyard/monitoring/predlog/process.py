"""The prediction log's writer process: a child forked from each worker that builds, protects,
writes and compacts the worker's segments at the lowest CPU priority, so that none of that holds
the worker's GIL or takes a core from its event loop.

A worker's event loop and a writer thread beside it share one GIL and the same cores: at 64
connections on the small model the thread's work (2.5-4 µs a request) cost the worker about 6 %
of its throughput (``benchmarks/ANALYSIS.md``). The worker now only copies each request into a
block (``columns.Block``) and, every ``BUILD_EVERY_S``, its thread pickles what is queued down a
pipe (about 1.5 µs a request); the child, at niceness ``NICENESS``, does the rest with the CPU
the others leave.

The child is forked at ``PredictionLog.start`` (before the log's thread starts), so it shares
the worker's memory copy-on-write, has nothing to import, and inherits the cipher and the
personal-data rules as they are: what a request held crosses only a pipe, never the disk, before
those rules are applied. It answers each ``FLUSH`` and ``COMPACT`` with its counters. It leads
a process group of its own, so that the signals that stop the server (Ctrl-C in its terminal, a
``kill`` of its group) reach the worker and not the child: the worker stops it by closing the
pipe, after a last flush. When the pipe closes without one, or the worker is gone (it was killed,
and a process forked after the child still holds the pipe), the child writes what it received
and exits. A child that dies, or does not answer within ``ANSWER_TIMEOUT_S``, is given up: the
worker's thread writes from then on (``PredictionLog._talking``).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import warnings
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from dockyard.monitoring.predlog.columns import Block
    from dockyard.monitoring.predlog.tables import Entry
    from dockyard.monitoring.predlog.writer import PredictionLog

logger = logging.getLogger(__name__)

ITEMS, FLUSH, COMPACT = "items", "flush", "compact"
NICENESS = 19
"""The child's scheduling niceness: the lowest priority, so that it takes the CPU the worker and
the rest of the machine leave, yet is never starved (it keeps a small share when none is left,
and sheds through the worker's queue bound if that is not enough)."""
STOP_TIMEOUT_S = 10.0
"""How long a closing child gets to write what it holds and exit before it is killed."""
ANSWER_TIMEOUT_S = 60.0
"""How long the worker waits for the answer to a flush or a compaction (work the child does at
the lowest priority, on a machine that may be busy) before it gives the child up as hung."""
PARENT_CHECK_S = 1.0
"""How often an idle child checks that the worker that forked it is still there."""
_FORK = multiprocessing.get_context("fork")


class Counts(NamedTuple):
    """What the child has done since it started (its answer to ``FLUSH`` and ``COMPACT``)."""

    done: int
    """Rows it wrote or shed."""
    shed: int
    """Rows it could not write."""
    written: int
    seconds: float
    """Its CPU seconds."""
    removed: int
    """Segments the compaction asked for removed (0 in the answer to ``FLUSH``)."""


class WriterProcess:
    """The parent's end: ships queued items to the child and asks it to flush or compact.

    Used by the log's thread alone (and by ``close`` once that thread has stopped), so it needs
    no lock. Any failure to reach the child (it died) raises ``ChildGone``.
    """

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self._process = process
        self._conn = conn

    @classmethod
    def fork(cls, log: PredictionLog) -> WriterProcess:
        """Fork a child that writes ``log``'s rows (its copy of ``log`` does the work)."""
        ours, theirs = _FORK.Pipe()
        process = _FORK.Process(
            target=_serve, args=(log, theirs, ours), name="dockyard-prediction-log", daemon=True
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns on forking a process with threads, for the locks another thread
            # may hold. The child touches none of them: it builds its own log lock, logging
            # renews its locks at fork, and it reads only the pipe and writes its own files.
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        theirs.close()
        return cls(process, ours)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def ship(self, items: Sequence[Block | Entry]) -> None:
        """Hand ``items`` (blocks and requests queued by reference, in order) to the child."""
        self._call(ITEMS, items, answer=False)

    def flush(self) -> Counts:
        """Have the child write everything it received; its counters then."""
        counts = self._call(FLUSH, None, answer=True)
        assert counts is not None
        return counts

    def compact(self) -> Counts:
        """Have the child compact the folders it wrote to; its counters then."""
        counts = self._call(COMPACT, None, answer=True)
        assert counts is not None
        return counts

    def _call(self, kind: str, payload: object, *, answer: bool) -> Counts | None:
        try:
            _send(self._conn, (kind, payload))
            if not answer:
                return None
            if not self._conn.poll(ANSWER_TIMEOUT_S):
                raise ChildGone(f"no answer within {ANSWER_TIMEOUT_S:g} s, {self.stop()}")
            return Counts(*_receive(self._conn))
        except (EOFError, OSError) as exc:
            raise ChildGone(self.stop()) from exc

    def stop(self) -> str:
        """Close the pipe (the child writes what it holds, then exits) and reap the child,
        killing it past ``STOP_TIMEOUT_S``; how it ended."""
        self._conn.close()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
        code = self._process.exitcode
        return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


class ChildGone(Exception):
    """The writer process ended (its exit described in the message)."""


def _send(conn: Connection, message: object) -> None:
    """Pickle ``message`` to bytes and send them (a pickling error raises before anything is
    sent). Not ``Connection.send``: when its write fails (the other end died), the error's
    traceback holds a view of its BytesIO, and on Python 3.12.1 collecting that traceback in a
    cycle crashes the interpreter (a segfault in CI)."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _receive(conn: Connection) -> Any:
    """What ``_send`` sent at the other end."""
    return pickle.loads(conn.recv_bytes())


def _serve(log: PredictionLog, conn: Connection, parent_end: Connection) -> None:
    """The child's loop: build what arrives, write and compact when asked, until the pipe
    closes; then write what is left."""
    parent_end.close()  # else the child would keep its own pipe open and never see the parent go
    worker = os.getppid()
    os.setpgid(0, 0)  # the server's group signals stop the worker, which then stops the child
    gc.freeze()  # collections skip the worker's objects, whose pages then stay shared
    os.nice(NICENESS)  # the worker's event loop and its clients come first
    log.become_writer()
    while True:
        try:
            while not conn.poll(PARENT_CHECK_S):
                if os.getppid() != worker:
                    raise EOFError("the worker is gone")
            kind, payload = _receive(conn)
        except (EOFError, OSError):
            break
        if kind == ITEMS:
            log.receive(payload)
            continue
        removed = 0
        if kind == FLUSH:
            log.flush()
        elif kind == COMPACT:
            removed = log.compact()
        try:
            _send(conn, tuple(log.counts(removed)))
        except OSError:
            break
    log.flush()
