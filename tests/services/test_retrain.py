"""Retraining from production: the user's function trained on logged inputs joined to their labels,
registered with its parent in the lineage, and compared with the champion on held-out rows."""

from __future__ import annotations

import os
import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sqlalchemy import select

from dockyard.errors import InvalidInput
from dockyard.monitoring.feedback import labels_from_json, store_labels
from dockyard.monitoring.predlog import PredictionLog
from dockyard.registry.audit import read_entries
from dockyard.registry.tables import evaluations
from dockyard.security.principals import local_user
from dockyard.services.predict import load_model
from dockyard.services.register import Registration, register
from dockyard.services.retrain import import_fit, retrain
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from servers import dockyard_command

FEATURES = ["a", "b", "c", "d"]
DAY = timedelta(days=1)


def _traffic(workspace: Workspace, rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Log ``rows`` one-row requests to ``lr@production`` through the real prediction log, and
    label each; the labels follow a rule the champion was not trained on (so a retrained model
    can beat it)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    y = (x[:, 1] > 0).astype(np.int64)  # the champion learned feature a; the world moved to b
    loaded = load_model(workspace, "lr@production")
    log = PredictionLog(workspace.home.root / "predictions")
    for i in range(rows):
        inputs = {"input-0": x[i : i + 1]}
        log.append(loaded.version, f"r{i}", "key:svc", 0.001, inputs, loaded.predict(x[i : i + 1]))
    assert log.flush() == rows
    body = {"labels": [{"request_id": f"r{i}", "row": 0, "label": int(y[i])} for i in range(rows)]}
    store_labels(workspace.home, workspace.store, "lr", labels_from_json(body), local_user(), None)
    return x, y


@pytest.fixture
def champion(home: Path) -> Workspace:
    workspace = open_unprotected(home)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES)))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    register(
        workspace,
        model,
        Registration("lr", reference_data=x, feature_names=FEATURES, alias="production"),
    )
    return workspace


def fit(features: np.ndarray, labels: np.ndarray, reference: object) -> LogisticRegression:
    return LogisticRegression().fit(features, labels)


def test_the_challenger_is_trained_registered_and_compared(champion: Workspace) -> None:
    x, y = _traffic(champion, 100)

    done = retrain(champion, local_user(), "lr@production", fit, window=DAY)

    assert (done.champion.ref, done.challenger.ref) == ("lr:1", "lr:2")
    assert (done.train_rows, done.holdout_rows) == (80, 20)
    assert done.challenger.lineage.parent == "lr:1"
    assert champion.resolve("lr:2").lineage.parent == "lr:1"  # stored, not only returned
    assert done.challenger.params["retrained_from"] == "lr:1"
    assert done.challenger.lineage.data_rows == 80  # trained on the older rows only
    # Both measured on the newest 20 rows, as a direct computation gives.
    trained = LogisticRegression().fit(x[:80], y[:80])
    assert done.challenger_metrics["accuracy"] == pytest.approx(
        accuracy_score(y[80:], trained.predict(x[80:]))
    )
    champion_model = load_model(champion, "lr:1")
    assert done.champion_metrics["accuracy"] == pytest.approx(
        accuracy_score(y[80:], champion_model.predict(x[80:])["predict"])
    )
    assert done.challenger_metrics["accuracy"] > done.champion_metrics["accuracy"]
    with champion.store.engine.connect() as connection:
        recorded = connection.execute(
            select(evaluations.c.version, evaluations.c.metric, evaluations.c.value).where(
                evaluations.c.window == "retrain holdout 20rows"
            )
        ).all()
    assert (2, "accuracy", done.challenger_metrics["accuracy"]) in recorded
    assert (1, "accuracy", done.champion_metrics["accuracy"]) in recorded
    (audited,) = read_entries(champion.store.engine, actor=local_user().actor, limit=1)
    assert (audited.action, audited.target) == ("model.retrain", "lr:2")
    assert audited.details["champion"] == "lr:1"
    assert audited.details["challenger_metrics"] == done.challenger_metrics


def test_too_few_labels_is_refused_and_registers_nothing(champion: Workspace) -> None:
    _traffic(champion, 5)

    with pytest.raises(InvalidInput, match="lr has 5 labelled predictions since .* at least 20"):
        retrain(champion, local_user(), "lr", fit, window=DAY)
    assert [v.version for v in champion.store.list_versions("lr")] == [1]


def test_an_entrypoint_that_does_not_import_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="must look like module:function"):
        import_fit("train.fit")
    with pytest.raises(InvalidInput, match="cannot import 'nosuchmodule_xyz'"):
        import_fit("nosuchmodule_xyz:fit", tmp_path)
    (tmp_path / "trainer_abc.py").write_text("value = 1\n")
    with pytest.raises(InvalidInput, match="trainer_abc has no function 'fit'"):
        import_fit("trainer_abc:fit", tmp_path)


def test_the_command_line_retrains_with_a_module_of_the_current_folder(
    champion: Workspace, home: Path, tmp_path: Path
) -> None:
    _traffic(champion, 60)
    (tmp_path / "mytrain.py").write_text(
        textwrap.dedent(
            """
            from sklearn.tree import DecisionTreeClassifier

            def fit(features, labels, reference):
                return DecisionTreeClassifier(max_depth=3, random_state=0).fit(features, labels)
            """
        )
    )

    done = subprocess.run(
        [*dockyard_command(), "retrain", "lr", "--entrypoint", "mytrain:fit", "--window", "1d"],
        cwd=tmp_path,
        env={**os.environ, "DOCKYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "registered lr:2 (retrained from lr:1 on 48 labelled rows)"
    assert lines[1] == "on the newest 12 labelled rows, kept out of training:"
    assert any(line.split()[0] == "accuracy" for line in lines[2:])
