"""Delayed labels against a real server that requires keys: predictions answered to a client,
labels posted for them (``POST /v2/models/lr/feedback``, and ``dockyard monitor feedback`` with a
CSV file, locally and ``--url``), then ``dockyard monitor evaluate`` gives the accuracy,
precision, recall, F1 and AUC scikit-learn computes directly on the same answers and labels,
beside the metrics recorded at registration."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn import metrics
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.home import Home
from dockyard.monitoring.predlog import read_predictions
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e

REGISTERED_ACCURACY = 0.97


def test_labels_give_the_metrics_scikit_learn_computes(
    home: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    x, y = tabular_data
    workspace = open_unprotected(home)
    register(
        workspace,
        logistic,
        Registration(
            "lr",
            reference_data=x[:50],
            alias="production",
            metrics={"accuracy": REGISTERED_ACCURACY},
        ),
    )
    keys = {
        role.value: workspace.keys.create(local_user(), f"test-{role.value}", role)[1]
        for role in (Role.PREDICTOR, Role.AUDITOR)
    }
    workspace.store.engine.dispose()
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    server = start_server(home, "--workers", "2", auth=True)
    predictor = {"Authorization": f"Bearer {keys['predictor']}"}

    # Requests of 1 to 4 rows; the client keeps what it was answered.
    choose = random.Random(0)
    answered: list[tuple[str, int, int, float, int]] = []  # id, row, predicted, P(1), truth
    with httpx.Client(headers=predictor, timeout=30) as http:
        for _ in range(150):
            rows = choose.randint(1, 4)
            start = choose.randrange(len(x) - rows)
            body = {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [rows, x.shape[1]],
                        "datatype": "FP64",
                        "data": x[start : start + rows].tolist(),
                    }
                ]
            }
            response = http.post(f"{server.url}/v2/models/lr/infer", json=body)
            assert response.status_code == 200, response.text
            outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
            for row in range(rows):
                answered.append(
                    (
                        response.headers["x-request-id"],
                        row,
                        outputs["predict"][row],
                        outputs["predict_proba"][2 * row + 1],
                        int(y[start + row]),
                    )
                )
    logged = Home(home)
    wait_for(lambda: read_predictions(logged, "lr", columns=["row"]).num_rows == len(answered))

    # Ground truth for most rows (not all: some predictions stay unlabelled), sent in two calls;
    # the first one's labels for a few rows are wrong and then corrected by the second.
    labelled = answered[: len(answered) - 40]
    first = [
        {"request_id": rid, "row": row, "label": 1 - truth}
        for rid, row, _, _, truth in labelled[:30]
    ]
    second = [{"request_id": rid, "row": row, "label": truth} for rid, row, _, _, truth in labelled]
    url = f"{server.url}/v2/models/lr/feedback"
    for items in (first, second[:100], second[100:]):
        sent = httpx.post(url, json={"labels": items}, headers=predictor)
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"model": "lr", "labels": len(items)}

    code, out, err = run_cli(
        capsys, "monitor", "evaluate", "lr", "--window", "1h", "--json", "--home", str(home)
    )
    assert code == 0, err
    found = {result["metric"]: result for result in json.loads(out)}
    truth = [item[4] for item in labelled]
    predicted = [item[2] for item in labelled]
    scores = [item[3] for item in labelled]
    expected = {
        "accuracy": metrics.accuracy_score(truth, predicted),
        "precision": metrics.precision_score(truth, predicted),
        "recall": metrics.recall_score(truth, predicted),
        "f1": metrics.f1_score(truth, predicted),
        "auc": metrics.roc_auc_score(truth, scores),
    }
    assert {metric: found[metric]["value"] for metric in expected} == pytest.approx(expected)
    assert all(result["rows"] == len(labelled) for result in found.values())
    assert all(result["version"] == 1 for result in found.values())
    assert found["accuracy"]["registered"] == REGISTERED_ACCURACY
    assert found["f1"]["registered"] is None

    # The table view shows live and registered values side by side.
    code, out, _ = run_cli(capsys, "monitor", "evaluate", "lr", "--home", str(home))
    assert code == 0
    line = next(line for line in out.splitlines() if " accuracy " in line)
    assert f"{expected['accuracy']:.4g}" in line
    assert f"{REGISTERED_ACCURACY:.4g}" in line

    # The last 40 rows labelled from a CSV file through the server: all rows now count.
    rest = tmp_path / "labels.csv"
    rest.write_text(
        "request_id,row,label\n"
        + "".join(f"{rid},{row},{truth}\n" for rid, row, _, _, truth in answered[-40:])
    )
    monkeypatch.setenv("DOCKYARD_API_KEY", keys["predictor"])
    code, out, err = run_cli(capsys, "monitor", "feedback", "lr", str(rest), "--url", server.url)
    assert (code, out) == (0, "stored 40 labels for lr\n"), err
    code, out, err = run_cli(capsys, "monitor", "evaluate", "lr", "--json", "--home", str(home))
    everything = {result["metric"]: result["value"] for result in json.loads(out)}
    all_truth = [item[4] for item in answered]
    all_predicted = [item[2] for item in answered]
    assert everything["accuracy"] == pytest.approx(metrics.accuracy_score(all_truth, all_predicted))

    # A local CSV of wrong labels for every row: the latest labels win.
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(
        "request_id,row,label\n"
        + "".join(f"{rid},{row},{1 - pred}\n" for rid, row, pred, _, _ in answered)
    )
    code, out, err = run_cli(capsys, "monitor", "feedback", "lr", str(wrong), "--home", str(home))
    assert (code, out) == (0, f"stored {len(answered)} labels for lr\n"), err
    code, out, _ = run_cli(capsys, "monitor", "evaluate", "lr", "--json", "--home", str(home))
    assert {r["metric"]: r["value"] for r in json.loads(out)}["accuracy"] == 0.0


BAD_BODIES = [
    ('{"labels": [{"request_id": "a", "lable": 1}]}', "unknown field 'lable'"),
    ('{"labels": [{"request_id": "a", "label": NaN}]}', "not valid JSON"),
    ('{"labels": [{"request_id": "\\ud800", "label": 1}]}', "not valid JSON"),
    ('{"labels": []}', "'labels' must be a non-empty list"),
    ("[1]", "body must be a JSON object"),
]


def test_feedback_is_bounded_and_checked_before_it_is_stored(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--max-body-bytes", "2000")
    url = f"{server.url}/v2/models/lr/feedback"
    for body, message in BAD_BODIES:
        bad = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400, (body, bad.text)
        assert message in bad.json()["error"], (body, bad.text)
    labels: list[dict[str, Any]] = [{"request_id": f"r{i}", "label": 1} for i in range(100)]
    too_big = httpx.post(url, json={"labels": labels})
    assert too_big.status_code == 413
    assert "max_body_bytes" in too_big.json()["error"]
    text = httpx.post(url, content=b'{"labels": []}', headers={"Content-Type": "text/plain"})
    assert text.status_code == 400
    assert "Content-Type must be application/json" in text.text
    unknown = httpx.post(
        f"{server.url}/v2/models/nope/feedback", json={"labels": [{"request_id": "a", "label": 1}]}
    )
    assert unknown.status_code == 404
    assert not (served / "labels").exists()
    stored = httpx.post(url, json={"labels": labels[:3]})
    assert stored.status_code == 200
    assert stored.json()["labels"] == 3
    assert len(list((served / "labels" / "lr").glob("*.parquet"))) == 1


def test_only_roles_that_may_send_feedback_can(
    served: Path, start_server: Callable[..., Server]
) -> None:
    workspace = Workspace.open(load_settings({"home": served}, env={}))
    auditor = workspace.keys.create(local_user(), "auditor", Role.AUDITOR)[1]
    scoped = workspace.keys.create(local_user(), "scoped", Role.PREDICTOR, ["other"])[1]
    workspace.store.engine.dispose()
    server = start_server(served, auth=True)
    body = {"labels": [{"request_id": "a", "label": 1}]}
    for key in (auditor, scoped):
        refused = httpx.post(
            f"{server.url}/v2/models/lr/feedback",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 403, refused.text
    assert not (served / "labels").exists()
