"""The monitoring jobs run in a process of their own beside ``serve``'s workers: it (and never a
worker) holds the home's scheduler lock, a new one replaces it when it dies, and it leaves with
``serve`` — on a graceful stop, and on its own when ``serve`` is killed."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.home import Home, process_is_alive
from dockyard.monitoring.scheduler import lock_path
from servers import Server, children
from waiting import wait_for

pytestmark = pytest.mark.e2e


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped by whoever adopted it counts)."""
    if not process_is_alive(pid):
        return True
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def lock_holder(home: Path) -> int | None:
    """The process holding the flock on the home's scheduler lock (from /proc/locks), if any."""
    path = lock_path(Home(home))
    if not path.exists():
        return None
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            return int(fields[4])
    return None


def lock_is_free(home: Path) -> bool:
    fd = os.open(lock_path(Home(home)), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture(autouse=True)
def quick_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_DRIFT_INTERVAL_S", "0.2")


def test_the_jobs_run_beside_the_workers_and_a_dead_process_is_replaced(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--workers", "2")
    wait_for(lambda: len(server.monitoring()) == 1 and len(server.workers()) == 2, "the processes")
    (monitoring,) = server.monitoring()
    assert monitoring in children(server.process.pid)
    wait_for(lambda: lock_holder(served) == monitoring, "the monitoring process to take the lock")
    assert monitoring not in server.workers()

    os.kill(monitoring, signal.SIGKILL)
    wait_for(lambda: len(server.monitoring()) == 2, "a new monitoring process")
    replacement = server.monitoring()[-1]
    assert replacement != monitoring
    assert replacement in children(server.process.pid)
    wait_for(lambda: lock_holder(served) == replacement, "the new process to take the lock")
    assert "the monitoring process (pid" in server.output()
    assert len(server.workers()) == 2

    server.stop()
    assert server.process.returncode == 0, server.output()
    assert gone(replacement)
    assert lock_is_free(served)


def test_the_process_leaves_when_serve_is_killed(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--workers", "1")
    wait_for(lambda: len(server.monitoring()) == 1, "the monitoring process")
    (monitoring,) = server.monitoring()
    wait_for(lambda: lock_holder(served) == monitoring, "the monitoring process to take the lock")

    server.process.kill()
    server.process.wait()
    wait_for(lambda: gone(monitoring), "the orphaned process to leave", 10)
    assert lock_is_free(served)
