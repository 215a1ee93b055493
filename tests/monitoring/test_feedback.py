"""Delayed labels in-process, on real files and a real registry database (SQLite; PostgreSQL too
where ``DOCKYARD_TEST_POSTGRES_URL`` is set): labels are checked and stored, the latest label of
a request wins, predictions are joined to them, and each version's live metrics equal
scikit-learn's on the same rows, stored in ``evaluations`` beside the registered ones."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics
from sqlalchemy import select

from dockyard.errors import Forbidden, InvalidInput
from dockyard.home import Home
from dockyard.monitoring.feedback import (
    evaluate,
    labels_from_csv,
    labels_from_json,
    read_labelled,
    read_labels,
    store_labels,
)
from dockyard.monitoring.predlog import PredictionLog, read_predictions
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from dockyard.registry.store import RegistryStore, utc_now
from dockyard.registry.tables import evaluations
from dockyard.security.principals import Principal, Role, local_user
from registry.conftest import (  # noqa: F401 (the registry tests' database fixtures)
    DIGEST,
    LINEAGE,
    database_url,
    postgres_admin,
)

FEATURES = 4
CLASSIFIER = Signature(
    inputs=tuple(TensorSpec(f"f{j}", "FP64", (-1,)) for j in range(FEATURES)),
    outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 2))),
    tabular=True,
)
REGRESSOR = Signature(
    inputs=CLASSIFIER.inputs, outputs=(TensorSpec("predict", "FP64", (-1,)),), tabular=True
)
NAMED_CLASSES = Signature(
    inputs=CLASSIFIER.inputs,
    outputs=(TensorSpec("predict", "BYTES", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 3))),
    tabular=True,
)
ADMIN = local_user()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:  # noqa: F811
    registry = RegistryStore.open(database_url)
    yield registry
    registry.close()


def register(store: RegistryStore, model: str, signature: Signature, **metrics: float) -> Any:
    return store.create_version(
        model=model,
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=signature,
        lineage=LINEAGE,
        metrics=metrics,
    )


def log_requests(
    home: Home, version: ModelVersion, outputs: list[dict[str, np.ndarray]], prefix: str = "r"
) -> list[str]:
    """Log one request per ``outputs`` item (rows as many as its outputs have); their ids."""
    log = PredictionLog(home.root / "predictions")
    rng = np.random.default_rng(len(outputs))
    ids = []
    for index, answer in enumerate(outputs):
        rows = len(next(iter(answer.values())))
        request_id = f"{prefix}{index}"
        log.append(version, request_id, "p", 0.01, {"x": rng.normal(size=(rows, FEATURES))}, answer)
        ids.append(request_id)
    log.flush()
    return ids


def labels_table(items: list[dict[str, Any]]) -> pa.Table:
    return labels_from_json({"labels": items})


def binary_answers(rng: np.random.Generator, count: int) -> list[dict[str, np.ndarray]]:
    answers = []
    for _ in range(count):
        rows = int(rng.integers(1, 4))
        positive = rng.uniform(size=rows)
        answers.append(
            {
                "predict": (positive > 0.5).astype(np.int64),
                "predict_proba": np.column_stack([1 - positive, positive]),
            }
        )
    return answers


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body must be a JSON object"),
        ({"label": []}, "body must be a JSON object"),
        ({"labels": [], "extra": 1}, "unknown field 'extra'"),
        ({"labels": []}, "'labels' must be a non-empty list"),
        ({"labels": [1]}, r"labels\[0\] must be an object"),
        ({"labels": [{"request_id": "a", "lable": 1}]}, r"labels\[0\]: unknown field 'lable'"),
        ({"labels": [{"label": 1}]}, r"labels\[0\]: 'request_id' must be a non-empty string"),
        ({"labels": [{"request_id": "", "label": 1}]}, "'request_id' must be a non-empty"),
        ({"labels": [{"request_id": "a" * 1025, "label": 1}]}, "longer than 1024"),
        ({"labels": [{"request_id": "a", "row": -1, "label": 1}]}, "'row' must be a whole"),
        ({"labels": [{"request_id": "a", "row": True, "label": 1}]}, "'row' must be a whole"),
        ({"labels": [{"request_id": "a", "row": 2**31, "label": 1}]}, "'row' must be a whole"),
        ({"labels": [{"request_id": "a", "row": 1.5, "label": 1}]}, "'row' must be a whole"),
        ({"labels": [{"request_id": "a"}]}, r"labels\[0\]: 'label' is missing"),
        ({"labels": [{"request_id": "a", "label": None}]}, "'label' must be a number or"),
        ({"labels": [{"request_id": "a", "label": [1]}]}, "'label' must be a number or"),
        ({"labels": [{"request_id": "a", "label": float("nan")}]}, "finite number"),
        (
            {"labels": [{"request_id": "a", "label": 1}, {"request_id": "b", "label": "x"}]},
            "all numbers or all strings",
        ),
        ({"labels": [{"request_id": "a", "label": 1}] * 100_001}, "send at most 100000"),
    ],
)
def test_bad_labels_are_refused_naming_the_problem(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        labels_from_json(body)


def test_labels_from_json_and_csv(tmp_path: Path) -> None:
    table = labels_table(
        [{"request_id": "a", "label": True}, {"request_id": "b", "row": 2, "label": 0.5}]
    )
    assert table.column_names == ["request_id", "row", "label", "time"]
    assert table.to_pydict()["label"] == [1.0, 0.5]
    assert table["row"].to_pylist() == [0, 2]
    assert labels_table([{"request_id": "a", "label": "fraud"}])["label"].type == pa.string()

    with_rows = tmp_path / "labels.csv"
    with_rows.write_text("request_id,row,label,comment\n007,1,1,x\n008,0,0,y\n")
    table = labels_from_csv(with_rows)
    assert table.select(["request_id", "row", "label"]).to_pylist() == [
        {"request_id": "007", "row": 1, "label": 1.0},
        {"request_id": "008", "row": 0, "label": 0.0},
    ]
    named = tmp_path / "named.csv"
    named.write_text("label,request_id\nfraud,a\nok,b\n")
    assert labels_from_csv(named).to_pydict()["label"] == ["fraud", "ok"]
    assert labels_from_csv(named)["row"].to_pylist() == [0, 0]

    bad = tmp_path / "bad.csv"
    for text, message in [
        ("request_id,value\na,1\n", "has no 'label' column"),
        ("request_id,label\na,\n", "bad.csv line 2: the label is empty"),
        ("request_id,row,label\na,1,1\nb,-1,1\n", "bad.csv line 3: 'row' must be a whole"),
        ("request_id,label\n", "has no rows"),
        ('request_id,label\n"a,1\n', "not a readable CSV file"),
    ]:
        bad.write_text(text)
        with pytest.raises(InvalidInput, match=message):
            labels_from_csv(bad)
    with pytest.raises(InvalidInput, match="does not exist"):
        labels_from_csv(tmp_path / "missing.csv")


def test_the_latest_label_wins_and_predictions_join_their_labels(
    home: Home, store: RegistryStore
) -> None:
    version = ModelVersion("fraud", 1, "sklearn", ArtifactRef(DIGEST, "skops"), CLASSIFIER, LINEAGE)
    answers = binary_answers(np.random.default_rng(0), 3)
    answers[1] = {key: np.repeat(value[:1], 2, axis=0) for key, value in answers[1].items()}
    log_requests(home, version, answers)
    store_labels(
        home,
        store,
        "fraud",
        labels_table([{"request_id": "r1", "row": 1, "label": 0}]),
        ADMIN,
        None,
    )
    later = [
        {"request_id": "r1", "row": 1, "label": 1},  # replaces the first label
        {"request_id": "r0", "label": 0},
        {"request_id": "r0", "label": 1},  # the later item of one call wins too
        {"request_id": "unlogged", "label": 1},
    ]
    store_labels(home, store, "fraud", labels_table(later), ADMIN, None)
    labels = read_labels(home, "fraud").sort_by([("request_id", "ascending")])
    assert labels.select(["request_id", "row", "label"]).to_pylist() == [
        {"request_id": "r0", "row": 0, "label": 1.0},
        {"request_id": "r1", "row": 1, "label": 1.0},
        {"request_id": "unlogged", "row": 0, "label": 1.0},
    ]
    joined = read_labelled(home, "fraud")
    assert [(r["request_id"], r["row"], r["label"]) for r in joined.to_pylist()] == [
        ("r0", 0, 1.0),
        ("r1", 1, 1.0),
    ]
    predictions = read_predictions(home, "fraud").to_pylist()
    expected = [p for p in predictions if (p["request_id"], p["row"]) in {("r0", 0), ("r1", 1)}]
    assert joined.drop_columns(["label", "label_time"]).to_pylist() == expected
    assert joined.schema.field("output.predict_proba").type == pa.list_(pa.float64())


def test_text_and_number_labels_read_together(home: Home, store: RegistryStore) -> None:
    store_labels(home, store, "fraud", labels_table([{"request_id": "a", "label": 1}]), ADMIN, None)
    store_labels(
        home, store, "fraud", labels_table([{"request_id": "b", "label": "x"}]), ADMIN, None
    )
    labels = read_labels(home, "fraud").sort_by("request_id")
    assert labels["label"].to_pylist() == ["1", "x"]


def test_sending_labels_needs_the_send_feedback_action(home: Home, store: RegistryStore) -> None:
    labels = labels_table([{"request_id": "a", "label": 1}])
    auditor = Principal("audit", Role.AUDITOR)
    with pytest.raises(Forbidden):
        store_labels(home, store, "fraud", labels, auditor, None)
    scoped = Principal("bot", Role.PREDICTOR, frozenset({"other"}))
    with pytest.raises(Forbidden):
        store_labels(home, store, "fraud", labels, scoped, None)
    assert store_labels(home, store, "fraud", labels, Principal("bot", Role.PREDICTOR), None) == 1
    assert read_labels(home, "fraud").num_rows == 1


def test_sealed_labels(home: Home, store: RegistryStore) -> None:
    from dockyard.config import Settings
    from dockyard.monitoring.predlog import log_cipher

    settings = Settings(home=home.root, encryption_key=base64.b64encode(b"x" * 32).decode())
    cipher = log_cipher(settings, home)
    labels = labels_table([{"request_id": "a", "label": "fraud"}])
    store_labels(home, store, "fraud", labels, ADMIN, cipher)
    (segment,) = (home.root / "labels" / "fraud").iterdir()
    assert segment.name.endswith(".parquet.sealed")
    assert b"fraud" not in segment.read_bytes()
    assert read_labels(home, "fraud", cipher=cipher)["label"].to_pylist() == ["fraud"]


def test_classification_metrics_equal_scikit_learns(home: Home, store: RegistryStore) -> None:
    first = register(store, "fraud", CLASSIFIER, accuracy=0.91, auc=0.95)
    second = register(store, "fraud", CLASSIFIER)
    rng = np.random.default_rng(7)
    truth: dict[int, tuple[list[float], list[int], list[float]]] = {
        1: ([], [], []),
        2: ([], [], []),
    }
    items = []
    for version in (first, second):
        answers = binary_answers(rng, 120)
        ids = log_requests(home, version, answers, prefix=f"v{version.version}-")
        for request_id, answer in zip(ids[:100], answers[:100], strict=True):  # 20 unlabelled
            for row, predicted in enumerate(answer["predict"].tolist()):
                label = predicted if rng.uniform() < 0.8 else 1 - predicted
                items.append({"request_id": request_id, "row": row, "label": label})
                truth[version.version][0].append(label)
                truth[version.version][1].append(predicted)
                truth[version.version][2].append(float(answer["predict_proba"][row, 1]))
    store_labels(home, store, "fraud", labels_table(items), ADMIN, None)

    results = evaluate(home, store, "fraud", "1h")
    found = {(r.version, r.metric): r for r in results}
    for number, (labels, predicted, scores) in truth.items():
        expected = {
            "accuracy": metrics.accuracy_score(labels, predicted),
            "precision": metrics.precision_score(labels, predicted),
            "recall": metrics.recall_score(labels, predicted),
            "f1": metrics.f1_score(labels, predicted),
            "auc": metrics.roc_auc_score(labels, scores),
        }
        for metric, value in expected.items():
            assert found[number, metric].value == pytest.approx(value, abs=1e-12)
            assert found[number, metric].rows == len(labels)
    assert found[1, "accuracy"].registered == 0.91
    assert found[1, "auc"].registered == 0.95
    assert found[2, "accuracy"].registered is None
    assert len(results) == 10

    with store.engine.connect() as connection:
        stored = connection.execute(select(evaluations)).all()
    assert {(row.version, row.metric, row.value, row.rows, row.window) for row in stored} == {
        (r.version, r.metric, r.value, r.rows, "1h") for r in results
    }


def test_multiclass_and_named_classes(home: Home, store: RegistryStore) -> None:
    version = register(store, "kind", NAMED_CLASSES)
    classes = np.array(["bird", "cat", "dog"], dtype=object)
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(3), size=300)
    predicted = classes[proba.argmax(axis=1)]
    answers = [
        {"predict": predicted[i : i + 1], "predict_proba": proba[i : i + 1]} for i in range(300)
    ]
    ids = log_requests(home, version, answers)
    labels = [str(rng.choice(classes)) if rng.uniform() < 0.4 else str(p) for p in predicted]
    store_labels(
        home,
        store,
        "kind",
        labels_table([{"request_id": i, "label": y} for i, y in zip(ids, labels, strict=True)]),
        ADMIN,
        None,
    )
    found = {r.metric: r.value for r in evaluate(home, store, "kind", "1h")}
    assert found == pytest.approx(
        {
            "accuracy": metrics.accuracy_score(labels, predicted),
            "precision": metrics.precision_score(labels, predicted, average="macro"),
            "recall": metrics.recall_score(labels, predicted, average="macro"),
            "f1": metrics.f1_score(labels, predicted, average="macro"),
            "auc": metrics.roc_auc_score(labels, proba, multi_class="ovr", labels=classes),
        }
    )
    other = register(store, "other", NAMED_CLASSES)
    (request_id,) = log_requests(home, other, answers[:1])
    store_labels(
        home, store, "other", labels_table([{"request_id": request_id, "label": 1}]), ADMIN, None
    )
    with pytest.raises(InvalidInput, match="predicts named classes such as"):
        evaluate(home, store, "other", "1h")


def test_regression_metrics_and_a_window_of_rows(home: Home, store: RegistryStore) -> None:
    version = register(store, "price", REGRESSOR, mae=1.5)
    rng = np.random.default_rng(5)
    predicted = rng.normal(100, 10, size=50)
    answers = [{"predict": predicted[i : i + 1]} for i in range(50)]
    ids = log_requests(home, version, answers)
    truth = predicted + rng.normal(0, 2, size=50)
    items = [{"request_id": i, "label": float(y)} for i, y in zip(ids, truth, strict=True)]
    store_labels(home, store, "price", labels_table(items), ADMIN, None)
    found = {r.metric: r for r in evaluate(home, store, "price", "24h")}
    assert found["mae"].value == pytest.approx(metrics.mean_absolute_error(truth, predicted))
    assert found["rmse"].value == pytest.approx(metrics.root_mean_squared_error(truth, predicted))
    assert found["mae"].registered == 1.5
    assert found["mae"].rows == 50
    newest = {r.metric: r for r in evaluate(home, store, "price", "20rows")}
    assert newest["mae"].rows == 20
    assert newest["mae"].value == pytest.approx(
        metrics.mean_absolute_error(truth[-20:], predicted[-20:])
    )
    with pytest.raises(InvalidInput, match="window 'soon' must be a time like 24h"):
        evaluate(home, store, "price", "soon")


def test_nothing_labelled_in_the_window_stores_nothing(home: Home, store: RegistryStore) -> None:
    version = register(store, "fraud", CLASSIFIER)
    log = PredictionLog(
        home.root / "predictions", clock=lambda: (utc_now() - timedelta(days=2)).timestamp()
    )
    answer = binary_answers(np.random.default_rng(0), 1)[0]
    log.append(version, "old", "p", 0.01, {"x": np.zeros((len(answer["predict"]), 4))}, answer)
    log.flush()
    store_labels(
        home, store, "fraud", labels_table([{"request_id": "old", "label": 1}]), ADMIN, None
    )
    assert evaluate(home, store, "fraud", "24h") == []
    with store.engine.connect() as connection:
        assert connection.execute(select(evaluations)).all() == []
    found = evaluate(home, store, "fraud", "3d")
    assert {result.metric for result in found} >= {"accuracy", "f1"}
    with store.engine.connect() as connection:
        assert len(connection.execute(select(evaluations)).all()) == len(found)
