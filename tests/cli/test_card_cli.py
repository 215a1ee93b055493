"""``dockyard models card`` (show, --set FILE, --field, formats, --out), ``dockyard models
register --card`` and ``dockyard report`` through the real CLI on a real home: output, files
written, exit codes and one-line errors naming the field or file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.registry.audit import read_entries
from dockyard.services.workspace import Workspace
from tables import write_csv

CARD_TOML = """\
intended_use = "Rank card payments for manual fraud review."
limitations = "Trained on EU traffic of 2025 only."
owners = ["risk-team@example.com", "Ada Lovelace"]
"""


@pytest.fixture
def registered(
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Path:
    """``home`` with ``fraud:1`` registered by the CLI (no card); a card file beside it."""
    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    reference = write_csv(tmp_path / "reference.csv", tabular_data[0][:50])
    (tmp_path / "card.toml").write_text(CARD_TOML)
    code, _, err = run_cli(
        capsys, "models", "register", str(model), "-n", "fraud", "--reference", str(reference),
        "--home", str(home),
    )  # fmt: skip
    assert code == 0, err
    return home


def _card(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "models", "card", *args, "--home", str(home))


def _stored(home: Path) -> Workspace:
    return Workspace.open(load_settings({"home": home}, env={}))


def test_a_version_without_a_card_shows_every_field_missing_and_its_lineage(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _card(capsys, registered, "fraud:1")

    assert code == 0
    assert out.startswith("# Model card: fraud:1\n")
    assert out.count("_Not given._") == 7
    version = _stored(registered).store.get_version("fraud", 1)
    assert f"| Data fingerprint (SHA-256) | {version.lineage.data_sha256} (50 rows" in out
    assert f"| Registered by | {version.created_by} |" in out


def test_a_card_is_set_from_a_file_then_field_by_field(
    registered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _card(capsys, registered, "fraud:1", "--set", str(tmp_path / "card.toml"))
    assert code == 0
    assert out.strip() == (
        "set the model card of fraud:1; not given: out_of_scope_use, training_data, evaluation, "
        "ethical_considerations"
    )

    code, out, _ = _card(
        capsys, registered, "fraud", "--field", "evaluation=AUC 0.91 on the 2025 holdout",
        "--field", "owners=risk-team@example.com, ml-platform", "--field", "limitations=",
    )  # fmt: skip
    assert code == 0

    card = _stored(registered).store.get_version("fraud", 1).card
    assert card == {
        "intended_use": "Rank card payments for manual fraud review.",
        "evaluation": "AUC 0.91 on the 2025 holdout",
        "owners": ["risk-team@example.com", "ml-platform"],
    }
    entries = read_entries(_stored(registered).store.engine, model="fraud")
    assert [entry.details for entry in entries if entry.action == "card.set"] == [
        {"fields": ["intended_use", "limitations", "owners"]},
        {"fields": ["evaluation", "limitations", "owners"]},
    ]
    code, out, _ = _card(capsys, registered, "fraud:1", "--format", "json")
    assert json.loads(out)["card"] == card


def test_the_card_is_written_as_html_to_a_file(
    registered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _card(capsys, registered, "fraud:1", "--set", str(tmp_path / "card.toml"))
    out_file = tmp_path / "card.html"

    code, out, err = _card(
        capsys, registered, "fraud:1", "--format", "html", "--out", str(out_file)
    )

    assert code == 0
    assert out == ""
    assert err.strip() == f"wrote {out_file}"
    page = out_file.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<li>Ada Lovelace</li>" in page
    assert "Rank card payments for manual fraud review." in page


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("fraud:1", "--field", "intended_uses=x"), 2, "unknown model card field 'intended_uses'"),
        (("fraud:1", "--field", "owners"), 2, "field 'owners' must look like key=value"),
        (("fraud:1", "--set", "missing.toml"), 2, "cannot read model card file"),
        (("fraud:1", "--format", "pdf"), 2, "--format must be one of markdown, html, json"),
        (("fraud:7", "--field", "limitations=x"), 4, "has no version 7"),
        (("ghost:1",), 4, "'ghost' is not registered"),
    ],
    ids=["unknown-field", "no-value", "missing-file", "format", "no-version", "no-model"],
)
def test_a_mistake_is_one_line_naming_it_and_changes_nothing(
    registered: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    found, _, err = _card(capsys, registered, *args)

    assert found == code
    assert message in err
    assert _stored(registered).store.get_version("fraud", 1).card is None


def test_register_sets_the_card_of_the_new_version(
    registered: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        "models", "register", str(tmp_path / "model.skops"), "-n", "fraud",
        "--reference", str(tmp_path / "reference.csv"), "--home", str(registered),
    ]  # fmt: skip
    (tmp_path / "bad.json").write_text('{"owners": "alice"}')

    code, _, err = run_cli(capsys, *args, "--card", str(tmp_path / "bad.json"))
    assert code == 2
    assert "'owners' must be a list of names" in err
    assert _stored(registered).store.get_model("fraud").latest_version == 1

    code, out, err = run_cli(capsys, *args, "--card", str(tmp_path / "card.toml"))
    assert code == 0, err
    assert out.startswith("registered fraud:2")
    card = _stored(registered).store.get_version("fraud", 2).card
    assert card is not None
    assert card["owners"] == ["risk-team@example.com", "Ada Lovelace"]


def test_the_report_is_written_as_html_or_json(
    registered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _card(capsys, registered, "fraud:1", "--set", str(tmp_path / "card.toml"))
    report = tmp_path / "report.json"

    code, _, err = run_cli(
        capsys, "report", "fraud", "--out", str(report), "--home", str(registered)
    )

    assert code == 0, err
    data = json.loads(report.read_text())
    assert (data["ref"], data["card"]["card"]["owners"][1]) == ("fraud:1", "Ada Lovelace")
    assert [entry["action"] for entry in data["audit"]["entries"]][-1] == "card.set"
    code, out, _ = run_cli(capsys, "report", "fraud", "--version", "1", "--home", str(registered))
    assert code == 0
    assert out.startswith("<!DOCTYPE html>")
    assert "Compliance report: fraud:1" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("fraud", "--format", "pdf"), 2, "--format must be one of html, json"),
        (("fraud", "--version", "3"), 4, "has no version 3"),
        (("fraud", "--window", "90d"), 2, "window '90d': give the monitoring summary's span"),
        (("ghost",), 4, "'ghost' is not registered"),
    ],
    ids=["format", "no-version", "window", "no-model"],
)
def test_a_report_mistake_is_one_line_naming_it(
    registered: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    found, out, err = run_cli(capsys, "report", *args, "--home", str(registered))

    assert found == code
    assert message in err
    assert out == ""
