"""The monitoring scheduler: one holder of the home's lock runs the jobs (another takes over when
the holder closes or its process dies), on its own thread, every ``drift_interval_s``; a job that
fails does not stop the alert rules."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from dockyard.config import Settings
from dockyard.home import Home
from dockyard.monitoring.alerts import list_alerts
from dockyard.monitoring.scheduler import MonitorScheduler, lock_path
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import security_events

RULES = {"any-event": {"kind": "security_events", "max": 0, "window": "1h"}}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(home: Home) -> Iterator[RegistryStore]:
    registry = RegistryStore.open(f"sqlite:///{home.database}")
    with registry.engine.begin() as connection:
        connection.execute(
            insert(security_events).values(
                at=datetime.now(UTC), kind="auth_failed", principal="", key_id="", method="GET",
                path="/v2", status=401, client="127.0.0.1:9", detail="no key", count=1,
            )
        )  # fmt: skip
    yield registry
    registry.close()


def nothing_served() -> Sequence[ModelVersion]:
    return []


def scheduler(
    home: Home,
    store: RegistryStore,
    versions: Callable[[], Sequence[ModelVersion]] = nothing_served,
    interval_s: float = 60.0,
) -> MonitorScheduler:
    settings = Settings(home=home.root, alerts=RULES, drift_interval_s=interval_s)
    return MonitorScheduler(home, store, settings, versions)


def test_only_the_holder_of_the_lock_runs_the_jobs(home: Home, store: RegistryStore) -> None:
    first, second = scheduler(home, store), scheduler(home, store)

    assert first.run_once()
    assert first.holds_lock
    assert not second.run_once()
    assert not second.holds_lock
    assert first.run_once()  # keeps it
    assert len(list_alerts(store.engine)) == 1  # evaluated twice: one alert

    first.close()
    assert second.run_once()
    assert second.holds_lock
    second.close()


def test_the_lock_goes_with_a_process_that_dies(home: Home, store: RegistryStore) -> None:
    lock_path(home).parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock_path(home))!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        waiting = scheduler(home, store)
        assert not waiting.run_once()
        assert list_alerts(store.engine) == []
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()

    assert waiting.run_once()
    assert [alert.rule for alert in list_alerts(store.engine)] == ["any-event"]
    waiting.close()


def test_a_failing_job_is_logged_and_the_alert_rules_still_run(
    home: Home, store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Sequence[ModelVersion]:
        raise RuntimeError("gateway gone")

    jobs = scheduler(home, store, broken)

    assert jobs.run_once()
    assert "monitoring: could not list the served versions" in caplog.text
    assert [alert.rule for alert in list_alerts(store.engine)] == ["any-event"]
    jobs.close()


def test_the_jobs_run_every_interval_on_their_own_thread(home: Home, store: RegistryStore) -> None:
    jobs = scheduler(home, store, interval_s=0.1)
    jobs.start()
    deadline = time.monotonic() + 10
    while not list_alerts(store.engine):
        assert time.monotonic() < deadline, "no round ran"
        time.sleep(0.05)
    assert jobs.holds_lock

    started = time.monotonic()
    jobs.close()
    assert time.monotonic() - started < 2
    assert not jobs.holds_lock
    assert scheduler(home, store).run_once()  # released
