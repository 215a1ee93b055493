"""The prediction log mirrored to ``prediction_log_url`` every ``log_ship_interval_s``, by the
monitoring process: the serving workers only write their segments, never call the bucket.

Each pass (``monitoring.predlog.mirror``) uploads the settled segments the bucket lacks or holds
otherwise and deletes what compaction, a retention purge or an erasure removed here, so the
bucket follows the home within one interval. A failing bucket is one log record per pass; the
next pass sends what this one did not. Servers sharing a home take turns (``run/log-mirror.lock``).
"""

from __future__ import annotations

import logging
import threading

from dockyard.config import Settings
from dockyard.errors import DockyardError
from dockyard.home import Home
from dockyard.monitoring.predlog.mirror import LogMirror, Mirrored
from dockyard.reliability.monitor_process import BackgroundJob

logger = logging.getLogger("dockyard.monitoring")


def log_shipping(home: Home, settings: Settings) -> list[BackgroundJob]:
    """The job mirroring ``home``'s prediction log; none when ``prediction_log_url`` is unset
    (or cannot be used: boto3 missing, said once)."""
    if not settings.prediction_log_url:
        return []
    try:
        mirror = LogMirror.from_settings(settings, home)
    except DockyardError as exc:
        logger.error(
            "the prediction log is not mirrored to %s: %s", settings.prediction_log_url, exc
        )
        return []
    return [LogShipping(mirror, settings.log_ship_interval_s)]


class LogShipping(threading.Thread):
    """A thread running a mirror pass at start and every ``interval_s`` (``start`` is the
    thread's)."""

    def __init__(self, mirror: LogMirror, interval_s: float) -> None:
        super().__init__(name="dockyard-log-mirror", daemon=True)
        self._mirror = mirror
        self._interval_s = interval_s
        self._stopping = threading.Event()

    def run(self) -> None:
        self.run_once()
        while not self._stopping.wait(self._interval_s):
            self.run_once()

    def close(self) -> None:
        """Stop after the pass in progress."""
        self._stopping.set()
        self.join()

    def run_once(self) -> Mirrored | None:
        """One pass; None when it failed (logged once, never raised)."""
        try:
            done = self._mirror.run()
        except Exception as exc:  # never the end of the monitoring process
            logger.error(
                "mirroring the prediction log to %s failed (tried again in %g s): %s",
                self._mirror.url,
                self._interval_s,
                exc,
            )
            return None
        if done.uploaded or done.deleted:
            logger.info(
                "prediction log mirrored to %s: %d segment(s) uploaded, %d deleted",
                self._mirror.url,
                done.uploaded,
                done.deleted,
            )
        return done
