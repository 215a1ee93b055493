"""The rollout watch: rolls a canary or shadow candidate back when it crosses its limits; run by
the monitoring process.

Every ``CHECK_EVERY_S`` it reads the active rollouts and the server's metrics folder (every
worker's counts, summed: ``monitoring.metrics.read_totals``) and judges each rollout on what
happened since the watch first saw it: once the candidate answered ``rollout_min_requests``, its
error rate (5xx answers, or failed mirrored requests), its p99 latency against the stable
version's, and, for a shadow, the share of mirrored requests whose outputs disagreed. Rolling
back is the registry's state change (``services.rollouts.roll_back``, audited); when two servers
share a registry the first to act wins and the other learns it had ended.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from dockyard.config import Settings
from dockyard.errors import DockyardError
from dockyard.monitoring.metrics import (
    DISAGREE,
    FAILED,
    LATENCY_BOUNDS_S,
    Snapshot,
    Stats,
    read_totals,
)
from dockyard.registry.records import Rollout
from dockyard.registry.rollouts import SHADOW, active_rollouts
from dockyard.reliability.monitor_process import BackgroundJob
from dockyard.services.rollouts import roll_back
from dockyard.services.workspace import Workspace

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
SERVER_ERROR = 500
QUANTILE = 0.99


@dataclass(frozen=True)
class Limits:
    """When a candidate is rolled back (the ``rollout_*`` settings)."""

    max_error_rate: float
    max_p99_ratio: float
    max_disagreement: float
    min_requests: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.rollout_max_error_rate,
            settings.rollout_max_p99_ratio,
            settings.rollout_max_disagreement,
            settings.rollout_min_requests,
        )


@dataclass
class Tally:
    """What one version did in a window: requests, failures, disagreements and latency."""

    requests: int = 0
    failed: int = 0
    disagreed: int = 0
    latency: Stats | None = None

    def add(self, stats: Stats, *, failed: bool = False, disagreed: bool = False) -> None:
        count = int(stats[0])
        self.requests += count
        self.failed += count if failed else 0
        self.disagreed += count if disagreed else 0
        if self.latency is None:
            self.latency = [0.0] * len(stats)
        for index, value in enumerate(stats):
            self.latency[index] += value

    def p99(self) -> float | None:
        """The upper bound of the histogram bucket holding the 99th percentile (inf past the
        last bound); None without requests."""
        if self.latency is None or not self.requests:
            return None
        wanted = QUANTILE * self.latency[0]
        seen = 0.0
        for index, count in enumerate(self.latency[2:]):
            seen += count
            if seen >= wanted:
                return LATENCY_BOUNDS_S[index] if index < len(LATENCY_BOUNDS_S) else math.inf
        return math.inf


def tally(totals: Snapshot, model: str, version: int, *, shadow: bool = False) -> Tally:
    """``model:version``'s requests in ``totals``: those it answered (5xx failed), or, with
    ``shadow``, those mirrored to it (failed or disagreeing)."""
    found = Tally()
    if shadow:
        for (name, number, outcome), stats in totals.shadow.items():
            if (name, number) == (model, version):
                found.add(stats, failed=outcome == FAILED, disagreed=outcome == DISAGREE)
        return found
    for (name, answered_by, _, status), stats in totals.requests.items():
        if (name, answered_by) == (model, version):
            found.add(stats, failed=status >= SERVER_ERROR)
    return found


def since(now: Tally, then: Tally) -> Tally:
    """What happened between two readings of the same counts."""
    latency = None
    if now.latency is not None:
        before = then.latency or [0.0] * len(now.latency)
        latency = [a - b for a, b in zip(now.latency, before, strict=True)]
    return Tally(
        now.requests - then.requests,
        now.failed - then.failed,
        now.disagreed - then.disagreed,
        latency,
    )


def verdict(rollout: Rollout, candidate: Tally, stable: Tally, limits: Limits) -> str | None:
    """Why ``rollout`` must be rolled back, judging its candidate against the stable version;
    None while it is within its limits or has answered too few requests to tell."""
    if candidate.requests < max(limits.min_requests, 1):
        return None
    served = "mirrored" if rollout.mode == SHADOW else "answered"
    rate = candidate.failed / candidate.requests
    if rate > limits.max_error_rate:
        return (
            f"error rate {rate:.2f} > {limits.max_error_rate} ({candidate.failed} of "
            f"{candidate.requests} requests {served} by {rollout.model}:{rollout.candidate} failed)"
        )
    if rollout.mode == SHADOW:
        compared = candidate.requests - candidate.failed
        disagreement = candidate.disagreed / compared if compared else 0.0
        if disagreement > limits.max_disagreement:
            return (
                f"disagreement {disagreement:.2f} > {limits.max_disagreement} "
                f"({candidate.disagreed} of {compared} mirrored outputs differed)"
            )
    mine, theirs = candidate.p99(), stable.p99()
    if (
        mine is not None
        and theirs is not None
        and stable.requests >= limits.min_requests
        and mine > limits.max_p99_ratio * theirs
    ):
        return (
            f"p99 latency {mine * 1000:g} ms > {limits.max_p99_ratio} x the stable "
            f"{rollout.model}:{rollout.stable}'s {theirs * 1000:g} ms"
        )
    return None


class RolloutWatch:
    """Judges every active rollout each ``every_s`` on a thread of its own (a ``BackgroundJob``)."""

    def __init__(
        self, workspace: Workspace, limits: Limits, metrics: Path, every_s: float = CHECK_EVERY_S
    ) -> None:
        self._workspace = workspace
        self._limits = limits
        self._metrics = metrics
        self._every_s = every_s
        self._baselines: dict[int, tuple[Tally, Tally]] = {}
        """Rollout → (candidate, stable) counts when the watch first saw it."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rollout-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def check(self) -> list[Rollout]:
        """One round: the rollouts it rolled back."""
        rollouts = active_rollouts(self._workspace.store.engine)
        totals = read_totals(self._metrics)
        rolled_back = []
        for rollout in rollouts:
            shadow = rollout.mode == SHADOW
            now = (
                tally(totals, rollout.model, rollout.candidate, shadow=shadow),
                tally(totals, rollout.model, rollout.stable),
            )
            then = self._baselines.setdefault(rollout.id, now)
            reason = verdict(rollout, since(now[0], then[0]), since(now[1], then[1]), self._limits)
            if reason is None:
                continue
            ended = roll_back(self._workspace, rollout, reason)
            if ended is not None:
                logger.warning("rolled back %s:%s: %s", rollout.model, rollout.candidate, reason)
                rolled_back.append(ended)
        active = {rollout.id for rollout in rollouts}
        self._baselines = {key: value for key, value in self._baselines.items() if key in active}
        return rolled_back

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.check()
            except DockyardError as exc:
                logger.warning("the rollout watch could not judge the rollouts: %s", exc)
            except Exception:
                logger.exception("the rollout watch failed a round")


def rollout_watch(
    workspace: Workspace, settings: Settings, metrics: Path | None
) -> list[BackgroundJob]:
    """The job judging ``workspace``'s active rollouts from the server's ``metrics`` folder; none
    when metrics are off (no automatic rollback: said once, at start)."""
    if metrics is None:
        logger.warning("metrics are off: rollouts are not rolled back automatically")
        return []
    return [RolloutWatch(workspace, Limits.of(settings), metrics)]
