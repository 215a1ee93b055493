"""``dockyard capacity`` measures a worker it starts itself and plans from what it measured."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import dockyard
from dockyard.config import load_settings
from dockyard.loadtest.capacity import holds
from dockyard.loadtest.stats import StageResult
from dockyard.services.workspace import Workspace
from servers import dockyard_command

pytestmark = pytest.mark.e2e

P99_MS = 200.0
TARGET_RPS = 2000.0


def test_the_plan_follows_from_the_measured_stages(
    tmp_path: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    home = tmp_path / "home"
    dockyard.register_model(logistic, "fraud", reference_data=tabular_data[0][:100], home=home)

    result = subprocess.run(
        [*dockyard_command(), "capacity", "fraud", "--p99", f"{P99_MS:g}ms",
         "--target", f"{TARGET_RPS:g}rps", "--duration", "0.4s", "--start-rate", "100",
         "--max-rate", "400", "--repeats", "2", "--cores-per-replica", "2", "--json",
         "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    stages = [StageResult(**stage) for stage in _fields(plan["stages"])]
    for stage in stages:
        assert stage.completed + stage.errors == stage.sent
    held = [stage for stage in stages if holds(stage, P99_MS)]
    assert held, plan  # 100 req/s of a logistic regression within 200 ms, even on a busy machine
    best = max(stage.offered_rps or 0.0 for stage in held)
    repeats = [stage for stage in stages if stage.offered_rps == best]
    assert len(repeats) >= 2
    per_worker = min(stage.achieved_rps for stage in repeats if holds(stage, P99_MS))
    assert plan["per_worker_rps"] == pytest.approx(per_worker)
    assert plan["workers"] == math.ceil(TARGET_RPS / per_worker)
    assert plan["cores"] == plan["workers"]
    assert plan["replicas"] == math.ceil(plan["workers"] / 2)
    assert plan["workers_per_replica"] * plan["replicas"] >= plan["workers"]
    assert f"one worker sustains {per_worker:.0f} req/s at p99 ≤ {P99_MS:g} ms" in plan["summary"]
    assert plan["confidence"] in ("high", "medium", "low")
    assert any("workers beyond a machine's cores add no throughput" in n for n in plan["notes"])

    # Its temporary key is revoked; the server it started is gone with it.
    keys = Workspace.open(load_settings({"home": home}, env={})).keys.all()
    temporary = [key for key in keys if key.name.startswith("capacity-")]
    assert len(temporary) == 1
    assert temporary[0].revoked_at is not None
    url = re.search(r"at (http://127\.0\.0\.1:\d+) ", plan["notes"][0])
    assert url is not None, plan["notes"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url[1]}/v2/health/live", timeout=2)


def _fields(stages: list[dict[str, object]]) -> list[dict[str, object]]:
    """Stage dicts without the derived ``error_share`` (a property of StageResult)."""
    return [{k: v for k, v in stage.items() if k != "error_share"} for stage in stages]
