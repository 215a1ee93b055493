"""``dockyard deps audit`` through the real entry point, against small OSV advisory files."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clirun import run_cli as _cli
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

VULNERABLE_ID = "DOCKYARD-TEST-0001"
HARMLESS_ID = "DOCKYARD-TEST-0002"


def _advisory(advisory_id: str, name: str, events: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": advisory_id,
        "summary": f"test advisory for {name}",
        "aliases": [f"CVE-2099-{advisory_id[-4:]}"],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }


def _write_lines(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding="utf-8")
    return path


@pytest.fixture
def registered(
    workspace: Workspace, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = tabular_data
    version = register(workspace, logistic, Registration("lr", reference_data=x[:50]))
    assert version.lineage.packages["scikit-learn"] == importlib.metadata.version("scikit-learn")


@pytest.fixture
def harmless(tmp_path: Path) -> dict[str, Any]:
    """Matches nothing installed: numpy before 0.1."""
    return _advisory(HARMLESS_ID, "numpy", [{"introduced": "0"}, {"fixed": "0.1"}])


@pytest.fixture
def vulnerable_file(tmp_path: Path, harmless: dict[str, Any]) -> Path:
    """Marks the installed scikit-learn as vulnerable (spelt unlike its distribution name)."""
    installed = importlib.metadata.version("scikit-learn")
    events = [{"introduced": "0"}, {"last_affected": installed}]
    return _write_lines(
        tmp_path / "advisories.jsonl", _advisory(VULNERABLE_ID, "Scikit_Learn", events), harmless
    )


@pytest.mark.usefixtures("registered")
def test_a_vulnerable_package_is_reported_per_target_with_exit_11(
    capsys: pytest.CaptureFixture[str], home: Path, vulnerable_file: Path
) -> None:
    code, out, err = _cli(
        capsys, "deps", "audit", "--advisories", str(vulnerable_file), "--home", str(home)
    )
    assert code == 11, err
    environment, _, model = out.partition("lr:1:")
    assert environment.startswith("environment:")
    assert VULNERABLE_ID in environment
    assert VULNERABLE_ID in model
    assert HARMLESS_ID not in out
    assert "2 vulnerabilities in 2 targets (2 audited" in out
    assert err == ""


@pytest.mark.usefixtures("registered")
def test_nothing_found_exits_0(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, harmless: dict[str, Any]
) -> None:
    advisories = tmp_path / "harmless.json"
    advisories.write_text(json.dumps(harmless))
    code, out, err = _cli(
        capsys, "deps", "audit", "--advisories", str(advisories), "--home", str(home)
    )
    assert code == 0, err
    assert "lr:1:" in out
    assert "0 vulnerabilities in 0 targets (2 audited" in out


@pytest.mark.usefixtures("registered")
def test_json_output_lists_findings_per_target(
    capsys: pytest.CaptureFixture[str], home: Path, vulnerable_file: Path
) -> None:
    code, out, _ = _cli(
        capsys, "deps", "audit", "--advisories", str(vulnerable_file), "--json", "--home", str(home)
    )
    assert code == 11
    report = json.loads(out)
    assert report["vulnerabilities"] == 2
    targets = {target["target"]: target for target in report["targets"]}
    assert list(targets) == ["environment", "lr:1"]
    assert targets["environment"]["kind"] == "environment"
    assert targets["lr:1"]["kind"] == "model_version"
    installed = importlib.metadata.version("scikit-learn")
    for target in targets.values():
        (finding,) = target["findings"]
        assert finding["id"] == VULNERABLE_ID
        assert finding["package"] == "scikit-learn"
        assert finding["version"] == installed
        assert finding["aliases"] == ["CVE-2099-0001"]
        assert finding["fixed_versions"] == []


@pytest.mark.usefixtures("registered")
def test_archived_versions_are_audited_and_marked(
    capsys: pytest.CaptureFixture[str], home: Path, workspace: Workspace, vulnerable_file: Path
) -> None:
    workspace.store.archive("lr", 1)
    code, out, _ = _cli(
        capsys, "deps", "audit", "--advisories", str(vulnerable_file), "--home", str(home)
    )
    assert code == 11
    assert "lr:1 (archived):" in out


def test_an_empty_registry_audits_the_environment_only(
    capsys: pytest.CaptureFixture[str], home: Path, vulnerable_file: Path
) -> None:
    code, out, _ = _cli(
        capsys, "deps", "audit", "--advisories", str(vulnerable_file), "--json", "--home", str(home)
    )
    assert code == 11
    assert [target["target"] for target in json.loads(out)["targets"]] == ["environment"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [('{"id": "A", ', "is not valid JSON"), ('[{"id": 3}]', "'id' must be a string")],
)
def test_a_malformed_file_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, content: str, problem: str
) -> None:
    advisories = tmp_path / "broken.json"
    advisories.write_text(content)
    code, out, err = _cli(
        capsys, "deps", "audit", "--advisories", str(advisories), "--home", str(home)
    )
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: advisory file {advisories}")
    assert problem in line
    assert "Traceback" not in err


def test_no_advisories_and_no_pip_audit_is_exit_7(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, out, err = _cli(capsys, "deps", "audit", "--home", str(home))
    assert code == 7
    assert out == ""
    assert err.splitlines() == [
        "error: no advisory source: pip-audit is not installed or cannot reach its service; "
        "pass --advisories FILE (OSV JSON)"
    ]
