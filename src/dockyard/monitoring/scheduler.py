"""The server's periodic monitoring jobs: drift, live evaluations, then the alert rules, every
``drift_interval_s`` seconds, the retention's purge (at most every ``PURGE_EVERY_S``) and the
merging of dead workers' prediction-log segments (at most every ``ORPHAN_SWEEP_S``), in ONE
process per home.

Every server on a home runs a scheduler in its monitoring process (``reliability.monitor_process``,
never in a serving worker), but only the one holding an exclusive lock on
``$DOCKYARD_HOME/run/monitor.lock`` (``flock``, non-blocking) runs the jobs; the others try to
take the lock at each interval, so when its holder dies (the kernel releases the lock with the
process) another takes over within one interval. A job that fails is logged and the next one still
runs.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import delete

from dockyard.config import Settings
from dockyard.home import Home, try_lock
from dockyard.monitoring.alert_rules import traffic_of
from dockyard.monitoring.alerts import AlertEngine, check_alerting
from dockyard.monitoring.drift import run_drift_once
from dockyard.monitoring.feedback import evaluate, labels_folder
from dockyard.monitoring.metrics import read_totals
from dockyard.monitoring.predlog import (
    LOCK_NAME,
    PREDICTIONS,
    log_cipher,
    predictions_folder,
    purge_before,
    sweep_orphans,
)
from dockyard.monitoring.webhook import Webhook
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import RegistryStore, utc_now
from dockyard.registry.tables import drift_reports

logger = logging.getLogger("dockyard.monitoring")
T = TypeVar("T")

RUN_FOLDER = "run"
LOCK_FILE = "monitor.lock"
CLOSE_WAIT_S = 10.0
"""How long closing waits for a round in progress (and queued notifications) to finish."""
PURGE_EVERY_S = 600.0
"""How often the retention's purge runs (the first round always does): it reads the segments
around the cutoff, which is wasted work every minute for a period counted in days."""
ORPHAN_SWEEP_S = 600.0
"""How often the segments of workers no longer alive are merged (the first round always does):
each worker merges only its own, so a restart leaves the old workers' to this process."""
RETENTION_ACTOR = "system:retention"


def lock_path(home: Home) -> Path:
    """The file whose holder runs a home's monitoring jobs."""
    return home.root / RUN_FOLDER / LOCK_FILE


class MonitorScheduler:
    """Runs drift, evaluations and alert rules periodically while this process holds the lock.

    ``versions`` gives the versions the server serves now (drift and evaluations are computed for
    them); ``metrics`` is the folder where the server's workers write their request counts
    (``monitoring.metrics``), read for the error-rate and latency rules (None: metrics off);
    ``retention`` the period after which every registered model's logged predictions, labels and
    drift reports are purged (None: kept forever; ``governance.retention``).
    """

    def __init__(
        self,
        home: Home,
        store: RegistryStore,
        settings: Settings,
        versions: Callable[[], Sequence[ModelVersion]],
        metrics: Path | None = None,
        retention: timedelta | None = None,
    ) -> None:
        self._home = home
        self._store = store
        self._settings = settings
        self._versions = versions
        self._webhook = (
            Webhook(settings.alert_webhook, settings.alert_webhook_secret)
            if settings.alert_webhook
            else None
        )
        traffic = None if metrics is None else lambda: traffic_of(read_totals(metrics))
        self.alerts = AlertEngine(check_alerting(settings), store, self._webhook, traffic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: int | None = None
        self._retention = retention
        self._next_purge = -math.inf
        self._next_sweep = -math.inf

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None

    def start(self) -> None:
        """Start the jobs' thread (after any fork: the lock is taken by this process's own open
        file)."""
        self._thread = threading.Thread(target=self._run, name="dockyard-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop after the round in progress, deliver queued notifications, release the lock.
        Blocks up to ``CLOSE_WAIT_S`` (call it off the event loop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(CLOSE_WAIT_S)
            self._thread = None
        if self._webhook is not None:
            self._webhook.close(CLOSE_WAIT_S)
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _run(self) -> None:
        while not self._stop.wait(self._settings.drift_interval_s):
            self._job("run the monitoring jobs", self.run_once)

    def run_once(self) -> bool:
        """One round, if this process holds (or now takes) the lock; whether it ran."""
        if not self._take_lock():
            return False
        versions = self._job("list the served versions", self._versions) or []
        self._job("compute drift", self._drift, versions)
        for model in sorted({version.model for version in versions}):
            self._job(f"evaluate {model}", self._evaluate, model)
        self._job("evaluate the alert rules", self.alerts.run_once)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + ORPHAN_SWEEP_S
            self._job("merge dead workers' logged predictions", self._sweep)
        if self._retention is not None and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY_S
            cutoff = utc_now() - self._retention
            for registered in self._job("list the models", self._store.list_models) or []:
                name = registered.name
                self._job(f"purge {name} past the retention", self._purge, name, cutoff)
        return True

    def _job(self, what: str, job: Callable[..., T], *args: object) -> T | None:
        try:
            return job(*args)
        except Exception:
            logger.exception("monitoring: could not %s", what)
            return None

    def _drift(self, versions: Sequence[ModelVersion]) -> None:
        run_drift_once(self._home, self._store, self._settings, versions)

    def _evaluate(self, model: str) -> None:
        cipher = log_cipher(self._settings, self._home)
        evaluate(self._home, self._store, model, self._settings.drift_window, cipher=cipher)

    def _sweep(self) -> None:
        cipher = log_cipher(self._settings, self._home)
        sweep_orphans(self._home.root / PREDICTIONS, cipher, now=time.time())

    def _purge(self, model: str, cutoff: datetime) -> None:
        """Remove ``model``'s logged predictions, labels and drift reports (their data-quality
        details quote request values) older than ``cutoff``; a ``data.purge`` audit entry
        when anything went, appended with the drift reports' deletion once the files are."""
        cipher = log_cipher(self._settings, self._home)
        predictions = purge_before(predictions_folder(self._home, model), cutoff, cipher)
        labels = purge_before(labels_folder(self._home, model), cutoff, cipher, lock=LOCK_NAME)
        engine = self._store.engine
        with database_errors(engine), write_transaction(engine) as connection:
            reports = connection.execute(
                delete(drift_reports).where(
                    drift_reports.c.model == model, drift_reports.c.computed_at < cutoff
                )
            ).rowcount
            if not any((*predictions, *labels, reports)):
                return
            details = {
                "cutoff": cutoff.isoformat(),
                "segments": predictions.segments,
                "rows": predictions.rows,
                "labels": labels.rows,
                "drift_reports": reports,
            }
            entry = AuditEntry(RETENTION_ACTOR, "data.purge", model, model, details)
            append(connection, entry)
        logger.info("retention: purged %s before %s: %s", model, cutoff.isoformat(), details)

    def _take_lock(self) -> bool:
        if self._lock is not None:
            return True
        path = lock_path(self._home)
        self._lock = try_lock(path)
        if self._lock is None:
            return False
        if self._webhook is not None:
            self._webhook.start()
        logger.info("monitoring jobs run in process %d (holder of %s)", os.getpid(), path)
        return True
