"""A version served with other versions of its framework's packages than it was registered with
is served, with a warning naming each package and both versions (the scikit-learn version skew)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select, update

from dockyard.registry.lineage import package_versions, version_skew
from dockyard.registry.tables import versions
from dockyard.services.register import Registration, register
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace
from servers import dockyard_command
from tables import write_csv


def test_only_the_frameworks_packages_that_differ_are_named() -> None:
    recorded = {"scikit-learn": "1.4.2", "numpy": "2.0.0", "xgboost": "1.0", "skops": "0.16"}
    installed = {"scikit-learn": "1.5.0", "numpy": "2.0.0", "xgboost": "9.9", "skops": "0.16"}

    assert version_skew("sklearn", recorded, installed) == [("scikit-learn", "1.4.2", "1.5.0")]
    assert version_skew("xgboost", recorded, installed) == [("xgboost", "1.0", "9.9")]
    assert version_skew("sklearn", recorded, {"numpy": "2.0.0"}) == [
        ("scikit-learn", "1.4.2", "not installed"),
        ("skops", "0.16", "not installed"),
    ]
    assert version_skew("sklearn", {}, installed) == []  # nothing recorded: nothing to compare


def _registered_with_old_sklearn(
    workspace: Workspace, logistic: LogisticRegression, x: np.ndarray
) -> None:
    register(workspace, logistic, Registration("lr", reference_data=x[:20]))
    engine = workspace.store.engine
    with engine.begin() as connection:
        lineage = dict(connection.execute(select(versions.c.lineage)).scalar_one())
        lineage["packages"] = {**lineage["packages"], "scikit-learn": "0.0.1"}
        connection.execute(update(versions).values(lineage=lineage))


def test_serving_warns_of_each_skewed_package(
    workspace: Workspace,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    x, _ = tabular_data
    _registered_with_old_sklearn(workspace, logistic, x)
    running = package_versions()["scikit-learn"]

    with caplog.at_level(logging.WARNING, logger="dockyard"):
        runtime = load_for_serving(workspace, workspace.resolve("lr"))

    assert runtime is not None  # served all the same
    assert [record.getMessage() for record in caplog.records] == [
        f"lr:1 was registered with scikit-learn 0.0.1 and loads with scikit-learn {running}: "
        "its predictions may differ or fail; install scikit-learn==0.0.1 where it is served, "
        "or register it again here"
    ]


def test_predict_on_the_command_line_warns_too(
    workspace: Workspace,
    home: Path,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = tabular_data
    _registered_with_old_sklearn(workspace, logistic, x)
    rows = tmp_path / "rows.csv"
    write_csv(rows, x[:3])

    done = subprocess.run(
        [*dockyard_command(), "predict", "lr", "--input", str(rows)],
        env={**os.environ, "DOCKYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "lr:1 was registered with scikit-learn 0.0.1" in done.stderr
    assert len(done.stdout.splitlines()) == 4  # header + 3 predictions
