"""The rollout watch against real metrics files (as workers write them) and a real registry: it
judges only what happened since it first saw a rollout, waits for ``rollout_min_requests``, and
rolls back on the error rate, the p99 against the stable version's, or a shadow's disagreement,
once, audited."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from dockyard.config import load_settings
from dockyard.monitoring.metrics import LATENCY_BOUNDS_S, Snapshot, Stats
from dockyard.registry.rollouts import active_rollouts
from dockyard.registry.tables import audit_log
from dockyard.reliability.rollout_watch import Limits, RolloutWatch
from dockyard.security.principals import local_user
from dockyard.services import rollouts
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

LIMITS = Limits(max_error_rate=0.05, max_p99_ratio=2.0, max_disagreement=0.1, min_requests=20)
FAST_S = 0.001
SLOW_S = 0.2


def _stats(count: int, seconds: float) -> Stats:
    stats: Stats = [0.0] * (len(LATENCY_BOUNDS_S) + 3)
    stats[0], stats[1] = count, count * seconds
    bucket = next(i for i, bound in enumerate(LATENCY_BOUNDS_S) if seconds <= bound)
    stats[2 + bucket] = count
    return stats


class Worker:
    """One worker's metrics file, rewritten with its running totals as a worker does."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self.path = folder / "999999-1.json"
        self.snapshot = Snapshot()

    def answered(self, version: int, status: int, count: int, seconds: float = FAST_S) -> None:
        self._add(self.snapshot.requests, ("lr", version, "v2", status), _stats(count, seconds))

    def mirrored(self, outcome: str, count: int) -> None:
        self._add(self.snapshot.shadow, ("lr", 2, outcome), _stats(count, FAST_S))

    def _add(self, into: dict[Any, Stats], key: Any, stats: Stats) -> None:
        before = into.setdefault(key, [0.0] * len(stats))
        into[key] = [a + b for a, b in zip(before, stats, strict=True)]
        self.path.write_bytes(self.snapshot.to_bytes())


@pytest.fixture
def workspace(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> Iterator[Workspace]:
    settings = load_settings({"home": home}, env={})
    opened = Workspace.open(dataclasses.replace(settings, governance={"protected_aliases": []}))
    for _ in range(2):
        register(opened, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    opened.store.set_alias("lr", "production", 1)
    yield opened
    opened.store.close()


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return Worker(tmp_path / "metrics")


def _watch(workspace: Workspace, worker: Worker) -> RolloutWatch:
    return RolloutWatch(workspace, LIMITS, worker.path.parent)


def _rollbacks(workspace: Workspace) -> list[tuple[str, str]]:
    with workspace.store.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.actor, audit_log.c.details).where(
                audit_log.c.action == "rollout.rollback"
            )
        ).all()
    return [(row.actor, row.details["reason"]) for row in rows]


def test_errors_before_the_watch_saw_the_rollout_do_not_count_nor_do_too_few(
    workspace: Workspace, worker: Worker
) -> None:
    rollouts.start_rollout(workspace, local_user(), "lr", 2, percent=30)
    worker.answered(2, 500, 100)  # before the watch's first look: the version's past
    watch = _watch(workspace, worker)
    assert watch.check() == []

    worker.answered(2, 500, 10)
    worker.answered(2, 200, 9)

    assert watch.check() == []
    assert len(active_rollouts(workspace.store.engine)) == 1


def test_a_candidate_past_the_error_rate_is_rolled_back_once_and_audited(
    workspace: Workspace, worker: Worker
) -> None:
    rollouts.start_rollout(workspace, local_user(), "lr", 2, percent=30)
    watch = _watch(workspace, worker)
    watch.check()
    worker.answered(1, 200, 200)
    worker.answered(2, 200, 15)
    worker.answered(2, 500, 15)

    rolled_back = watch.check()

    assert [r.state for r in rolled_back] == ["rolled_back"]
    assert rolled_back[0].reason == (
        "error rate 0.50 > 0.05 (15 of 30 requests answered by lr:2 failed)"
    )
    assert _rollbacks(workspace) == [("system:rollout", rolled_back[0].reason)]
    assert watch.check() == []
    assert active_rollouts(workspace.store.engine) == []


def test_a_candidate_much_slower_than_the_stable_version_is_rolled_back(
    workspace: Workspace, worker: Worker
) -> None:
    rollouts.start_rollout(workspace, local_user(), "lr", 2, percent=30)
    watch = _watch(workspace, worker)
    watch.check()
    worker.answered(1, 200, 100, FAST_S)
    worker.answered(2, 200, 30, FAST_S)
    assert watch.check() == []

    worker.answered(2, 200, 30, SLOW_S)
    rolled_back = watch.check()

    assert rolled_back[0].reason == "p99 latency 250 ms > 2.0 x the stable lr:1's 1 ms"


def test_a_shadow_that_disagrees_is_rolled_back(workspace: Workspace, worker: Worker) -> None:
    rollouts.start_rollout(workspace, local_user(), "lr", 2, mode="shadow")
    watch = _watch(workspace, worker)
    watch.check()
    worker.mirrored("agree", 25)
    worker.mirrored("disagree", 2)
    assert watch.check() == []

    worker.mirrored("disagree", 10)
    rolled_back = watch.check()

    assert rolled_back[0].reason == "disagreement 0.32 > 0.1 (12 of 37 mirrored outputs differed)"
