"""The profile captured at registration: of the reference data and of the predictions Dockyard
makes on it, stored with the version on each database backend, and shown by ``models show``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.services import register as registration
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from registry.conftest import database_url, postgres_admin  # noqa: F401 (fixtures)
from tables import write_csv


@pytest.fixture
def workspace_on(home: Path, database_url: str) -> Iterator[Workspace]:  # noqa: F811
    """A home whose registry is the database of ``database_url`` (SQLite or PostgreSQL)."""
    workspace = Workspace.open(load_settings({"home": home, "database_url": database_url}, env={}))
    yield workspace
    workspace.store.close()


def test_the_profile_is_stored_with_the_version_and_read_back(
    workspace_on: Workspace,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inputs are profiled on every reference row; the outputs on PROFILE_ROWS rows evenly
    spaced across it, predicted by the registered model."""
    monkeypatch.setattr(registration, "PROFILE_ROWS", 100)
    monkeypatch.setattr(registration, "PROFILE_BATCH", 32)
    reference = tabular_data[0]
    version = register(workspace_on, logistic, Registration("lr", reference_data=reference))

    profile = version.profile
    assert profile is not None
    assert profile["rows"] == 600
    assert list(profile["features"]) == [f"x{j}" for j in range(30)]
    assert profile["features"]["x3"]["mean"] == pytest.approx(reference[:, 3].mean())
    spaced = reference[::6]  # 600 rows, at most 100 predicted
    assert profile["prediction_rows"] == len(spaced) == 100
    label = profile["outputs"]["output.predict"]
    direct = Counter(str(value) for value in logistic.predict(spaced).tolist())
    assert dict(zip(label["values"], label["counts"], strict=True)) == direct
    proba = profile["outputs"]["output.predict_proba[1]"]
    assert proba["mean"] == pytest.approx(logistic.predict_proba(spaced)[:, 1].mean())

    stored = workspace_on.store.get_version("lr", version.version)
    assert stored.profile == profile
    assert workspace_on.resolve("lr").to_dict()["profile"] == profile


def test_a_version_registered_with_only_a_signature_has_no_profile(
    workspace: Workspace, logistic: LogisticRegression
) -> None:
    signature = {
        "inputs": [{"name": f"x{j}", "datatype": "FP64"} for j in range(30)],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
        "tabular": True,
    }
    version = register(workspace, logistic, Registration("lr", signature=signature))
    assert version.profile is None
    assert workspace.store.get_version("lr", 1).profile is None


def test_a_reference_row_the_model_cannot_predict_fails_the_registration(
    workspace: Workspace,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    """The rows predicted for the profile pass the same checks as the first rows: an explicit
    signature that refuses NaN refuses a reference holding one, beyond the first rows too."""
    reference = tabular_data[0][:50].copy()
    reference[40, 2] = np.nan
    signature = {
        "inputs": [{"name": f"x{j}", "datatype": "FP64"} for j in range(30)],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
        "tabular": True,
    }
    with pytest.raises(Exception, match="x2"):
        register(
            workspace,
            logistic,
            Registration("lr", reference_data=reference, signature=signature),
        )
    assert workspace.store.list_models() == []


def test_models_show_prints_a_row_per_feature_and_output_and_json_has_it_all(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    reference = write_csv(tmp_path / "reference.csv", tabular_data[0][:200])
    h = ("--home", str(home))
    code, _, err = run_cli(
        capsys, "models", "register", str(model), "-n", "lr", "--reference", str(reference), *h
    )
    assert code == 0, err

    code, shown, err = run_cli(capsys, "models", "show", "lr", *h)
    assert code == 0, err
    assert "reference profile: 200 rows, predictions on 200" in shown
    lines = {line.split("│")[1].strip(): line for line in shown.splitlines() if "│" in line}
    x0 = tabular_data[0][:200, 0]
    assert f"{x0.min():.4g}" in lines["x0"]
    assert f"{x0.max():.4g}" in lines["x0"]
    assert "numeric" in lines["output.predict_proba[1]"]
    assert "categorical" in lines["output.predict"]
    counts = Counter(logistic.predict(tabular_data[0][:200]).tolist())
    top, n = counts.most_common(1)[0]
    assert f"{top} {n / 200:.0%}" in lines["output.predict"]

    code, raw, err = run_cli(capsys, "models", "show", "lr", "--json", *h)
    assert code == 0, err
    profile = json.loads(raw)["profile"]
    assert len(profile["features"]) == 30
    assert len(profile["features"]["x0"]["sample"]) == 200
