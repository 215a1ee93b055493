"""``dockyard optimize`` on a local home: the new version and what it gained, ``models show``
listing it, and a refusal as one line on stderr with its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli
from dockyard.errors import OptimizationRefused
from dockyard.services.register import Registration, register
from homes import open_unprotected
from optimizing import trained
from tables import write_csv

pytestmark = [pytest.mark.usefixtures("unprotected_config"), pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def forest_home(home: Path) -> Path:
    """A home holding ``trees:1``, a small random forest."""
    model, reference = trained("forest")
    register(open_unprotected(home), model, Registration("trees", reference_data=reference))
    return home


def test_optimize_registers_a_faster_version_and_show_lists_it(
    capsys: pytest.CaptureFixture[str], forest_home: Path
) -> None:
    h = ("--home", str(forest_home))
    code, out, err = run_cli(
        capsys,
        "optimize",
        "trees:1",
        "--target",
        "treelite",
        "--batch-size",
        "8",
        "--alias",
        "fast",
        *h,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("registered trees:2 (treelite, from trees:1 by treelite ")
    assert "max error" in lines[1]
    assert lines[2].lstrip().startswith("batch    1:")
    assert lines[3].lstrip().startswith("batch    8:")
    assert "aliases: fast" in out

    code, out, err = run_cli(capsys, "models", "show", "trees:1", *h)
    assert code == 0, err
    assert "optimized variants of trees:1" in out
    row = next(line for line in out.splitlines() if "trees:2" in line)
    assert "treelite" in row
    assert "at batch 1" in row
    assert "fast" in row

    code, out, err = run_cli(capsys, "models", "show", "trees@fast", *h)
    assert code == 0, err
    assert "optimized from trees:1 by treelite" in out


def test_json_names_every_attempt(capsys: pytest.CaptureFixture[str], forest_home: Path) -> None:
    code, out, err = run_cli(
        capsys, "optimize", "trees", "--json", "--batch-size", "4", "--home", str(forest_home)
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["version"]["lineage"]["optimization"]["source"] == "trees:1"
    converters = {attempt["converter"]: attempt for attempt in data["attempts"]}
    assert set(converters) == {"skl2onnx", "treelite", "tl2cgen"}  # those that take sklearn
    assert sum(attempt["chosen"] for attempt in data["attempts"]) == 1


def test_proof_rows_from_a_file(
    capsys: pytest.CaptureFixture[str], forest_home: Path, tmp_path: Path
) -> None:
    _, reference = trained("forest")
    rows = write_csv(tmp_path / "rows.csv", np.asarray(reference)[:30])
    code, _, err = run_cli(
        capsys,
        "optimize",
        "trees:1",
        "--target",
        "treelite",
        "--reference",
        str(rows),
        "--batch-size",
        "4",
        "--home",
        str(forest_home),
    )
    assert code == 0, err


def test_a_refusal_is_one_line_and_registers_nothing(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    model, reference = trained("logistic")
    workspace = open_unprotected(home)
    register(workspace, model, Registration("lr", reference_data=reference))

    code, out, err = run_cli(
        capsys, "optimize", "lr:1", "--target", "treelite", "--home", str(home)
    )

    assert code == OptimizationRefused.exit_code
    assert out == ""
    assert err.count("\n") == 1
    prefix = "error: lr:1 was not optimized, nothing was registered: treelite could not "
    assert err.startswith(prefix)
    assert "LogisticRegression" in err
    assert [v.ref for v in workspace.store.list_versions("lr")] == ["lr:1"]


def test_an_unknown_target_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], forest_home: Path
) -> None:
    code, _, err = run_cli(
        capsys, "optimize", "trees:1", "--target", "tvm", "--home", str(forest_home)
    )
    assert code == 2
    assert "--target must be one of auto, onnx, treelite" in err
