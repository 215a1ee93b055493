"""docs/governance.md's walkthrough — one model from registration to an approved production
release — run as written: its two TOML blocks as ``dockyard.toml`` and ``card.toml``, its shell
blocks in order in one shell, against a real server. Only the port differs (a free one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from servers import free_port

pytestmark = pytest.mark.e2e
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
FILES = ("dockyard.toml", "card.toml")


def walkthrough() -> tuple[list[str], list[str]]:
    """The walkthrough's TOML blocks and shell blocks, in order."""
    section = GUIDE.read_text().split("## One model, from registration", 1)[1].split("\n## ", 1)[0]
    return (
        re.findall(r"```toml\n(.*?)```", section, flags=re.S),
        re.findall(r"```bash\n(.*?)```", section, flags=re.S),
    )


@pytest.mark.timeout(300)
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    tomls, shells = walkthrough()
    assert len(tomls) == len(FILES)
    for name, text in zip(FILES, tomls, strict=True):
        (tmp_path / name).write_text(text)
    x, y = make_classification(n_samples=500, n_features=4, random_state=0)  # as the README's
    skops.io.dump(LogisticRegression().fit(x, y), tmp_path / "model.skops")
    header = "amount,age,balance,tenure"
    np.savetxt(tmp_path / "train.csv", x, delimiter=",", header=header, comments="")
    port = str(free_port())
    script = "\n".join(["set -euo pipefail", *shells, "kill %1", "wait %1 || true"])
    script = re.sub(r"(?<=:)8000\b|(?<=--port )8000\b", port, script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env["DOCKYARD_HOME"] = str(tmp_path / "home")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "every gate passes" in out
    assert "promotion 1 requested: fraud:1 → @production" in out
    assert "promotion 1 approved: fraud@production → fraud:1" in out
    for action in ("model.register", "card.set", "promotion.request", "promotion.approve"):
        assert action in out, action
    assert re.search(r"audit trail intact: \d+ entries", out)
    report = (tmp_path / "report.html").read_text()
    assert "Compliance report: fraud:1" in report
