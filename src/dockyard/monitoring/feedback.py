"""Delayed labels: ground truth attached to logged predictions by request id (and row), and each
version's metrics on its labelled live traffic, stored in ``evaluations`` next to the metrics
recorded at registration.

Labels are Parquet segments under ``$DOCKYARD_HOME/labels/<model>/`` (one per call that sends
some; sealed like the prediction log when ``encryption_key`` is set), columns ``request_id``,
``row``, ``label`` (double, or string for named classes) and ``time`` (when received). A request
labelled twice keeps its latest label.

A model's label segments are merged into one when a call leaves more than ``LABEL_SEGMENTS_MAX``
(under the folder's compaction lock; a busy lock: the next call does it). The merged segment
holds each request id and row's latest label, written and linked before the segments it replaces
are deleted: a reader may meet both for a moment, which changes nothing since it keeps the latest
label of each, and lists the folder again after reading (see ``read_settled``) so it never misses
both. A merge killed before the deletion leaves the same duplicates, merged away by the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import insert

from dockyard.datatypes import FLOATS
from dockyard.encryption import Cipher
from dockyard.errors import InvalidInput
from dockyard.home import Home
from dockyard.monitoring.drift import Window
from dockyard.monitoring.predlog import (
    OUTPUT,
    TIME,
    compaction_lock,
    concat,
    read_predictions,
    read_segment,
    read_settled,
    segments,
    write_segment,
)
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import ModelVersion, Signature
from dockyard.registry.refs import check_name
from dockyard.registry.store import RegistryStore, utc_now
from dockyard.registry.tables import evaluations
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require

LABELS = "labels"
MAX_LABELS = 100_000
"""Most labels one request (or one CSV sent to a server) carries."""
MAX_TEXT = 1024
"""Longest request id or text label accepted."""
MAX_ROW = 2**31 - 1
LABEL_SEGMENTS_MAX = 64
"""Label segments of a model past which ``store_labels`` merges them into one."""
LABEL_FIELDS = ("request_id", "row", "label")
SHAPE = '{"labels": [{"request_id": "...", "row": 0, "label": 1}, ...]}'
PROBABILITIES = "predict_proba"
"""The output whose rows are class probabilities (in the sorted order of the classes, as
scikit-learn's ``classes_``), used for the AUC."""
LABEL_SCHEMA = pa.schema(
    [("request_id", pa.string()), ("row", pa.int32()), ("label", pa.float64()), ("time", TIME)]
)


def labels_folder(home: Home, model: str) -> Path:
    return home.root / LABELS / check_name(model)


# Reading labels from what users send.


def labels_from_json(body: Any) -> pa.Table:
    """The labels of a ``POST /v2/models/{m}/feedback`` body, checked: InvalidInput names the
    first problem (the item, the field, what was expected)."""
    if not isinstance(body, Mapping) or "labels" not in body:
        raise InvalidInput(f"body must be a JSON object {SHAPE}")
    extra = [key for key in body if key != "labels"]
    if extra:
        raise InvalidInput(f"unknown field {extra[0]!r} in the body; expected {SHAPE}")
    items = body["labels"]
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"'labels' must be a non-empty list: {SHAPE}")
    if len(items) > MAX_LABELS:
        raise InvalidInput(f"{len(items)} labels in one request; send at most {MAX_LABELS}")
    ids, rows, labels = [], [], []
    for index, item in enumerate(items):
        where = f"labels[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where} must be an object with request_id, row and label")
        unknown = [key for key in item if key not in LABEL_FIELDS]
        if unknown:
            raise InvalidInput(
                f"{where}: unknown field {unknown[0]!r}; use {', '.join(LABEL_FIELDS)}"
            )
        ids.append(_request_id(item.get("request_id"), where))
        rows.append(_row(item.get("row", 0), where))
        if "label" not in item:
            raise InvalidInput(f"{where}: 'label' is missing")
        labels.append(_label(item["label"], where))
    return _labels_table(ids, rows, labels)


def labels_from_csv(path: Path) -> pa.Table:
    """The labels in a CSV file with columns ``request_id``, ``label`` and optionally ``row``
    (default 0); other columns are ignored."""
    types = {"request_id": pa.string(), "row": pa.int64()}
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    except FileNotFoundError:
        raise InvalidInput(f"labels file {path} does not exist") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"labels file {path} is not a readable CSV file: {exc}") from None
    missing = [name for name in ("request_id", "label") if name not in table.column_names]
    if missing:
        raise InvalidInput(
            f"labels file {path} has no {missing[0]!r} column; its columns must include "
            "request_id and label (and optionally row)"
        )
    ids = table["request_id"].to_pylist()
    labels = table["label"].to_pylist()
    rows = table["row"].to_pylist() if "row" in table.column_names else [0] * len(ids)
    for line, (request_id, row, label) in enumerate(zip(ids, rows, labels, strict=True), 2):
        where = f"{path.name} line {line}"
        _request_id(request_id, where)
        _row(row, where)
        if label is None:
            raise InvalidInput(f"{where}: the label is empty")
    if not ids:
        raise InvalidInput(f"labels file {path} has no rows")
    return _labels_table(ids, rows, [_label(label, path.name) for label in labels])


def _request_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}: 'request_id' must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{where}: 'request_id' is longer than {MAX_TEXT} characters")
    return value


def _row(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROW:
        raise InvalidInput(
            f"{where}: 'row' must be a whole number from 0 (the row within the request)"
        )
    return value


def _label(value: Any, where: str) -> float | str:
    if isinstance(value, bool | int | float) and not isinstance(value, str):
        number = float(value)
        if not np.isfinite(number):
            raise InvalidInput(f"{where}: 'label' must be a finite number or a string")
        return number
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InvalidInput(f"{where}: 'label' is longer than {MAX_TEXT} characters")
        return value
    raise InvalidInput(f"{where}: 'label' must be a number or a string (a class name)")


def _labels_table(ids: list[str], rows: list[int], labels: list[float | str]) -> pa.Table:
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise InvalidInput("labels must be all numbers or all strings, not both")
    now = pa.scalar(int(time.time() * 1e6), TIME)
    return pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "row": pa.array(rows, pa.int32()),
            "label": pa.array(labels, pa.string() if str in kinds else pa.float64()),
            "time": pa.repeat(now, len(ids)),
        }
    )


# Storing and reading them.


def store_labels(
    home: Home,
    store: RegistryStore,
    model: str,
    labels: pa.Table,
    principal: Principal,
    cipher: Cipher | None,
) -> int:
    """Store ``labels`` (from ``labels_from_json`` or ``labels_from_csv``) for ``model`` as
    ``principal`` (who must be allowed to send feedback on it); how many were stored.

    The segment is written inside the transaction of its ``labels.upload`` audit entry in
    ``store``'s database, and deleted again when that transaction fails."""
    require(principal, SERVICES["send_feedback"], model)
    folder = labels_folder(home, model)
    count = int(labels.num_rows)
    entry = AuditEntry(principal.actor, "labels.upload", model, model, {"labels": count})
    written: Path | None = None
    try:
        with database_errors(store.engine), write_transaction(store.engine) as connection:
            written = write_segment(folder, labels, cipher, time.time())
            append(connection, entry)
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    if len(segments(folder)) > LABEL_SEGMENTS_MAX:
        compact_labels(folder, cipher)
    return count


def compact_labels(folder: Path, cipher: Cipher | None) -> int:
    """Merge the label segments in ``folder`` into one holding the latest label of each request
    id and row (see the module docstring); the segments deleted (0 when another process holds
    the lock)."""
    with compaction_lock(folder) as locked:
        if not locked:
            return 0
        merged: list[tuple[int, Path]] = []

        def merge(found: list[tuple[int, Path]], read: Callable[[Path], pa.Table]) -> pa.Table:
            merged[:] = found
            return _latest([read(path) for _, path in found])

        table = read_settled(
            lambda: segments(folder),
            merge,
            lambda path: read_segment(path, None, None, cipher),
            exact=True,
        )
        if len(merged) < 2:
            return 0
        write_segment(folder, table, cipher, time.time(), durable=True)
        for _, path in merged:
            path.unlink(missing_ok=True)
        return len(merged)


def read_labels(home: Home, model: str, *, cipher: Cipher | None = None) -> pa.Table:
    """``model``'s labels, the latest one for each request id and row."""
    folder = labels_folder(home, model)
    return read_settled(
        lambda: segments(folder),
        lambda found, read: _latest([read(path) for _, path in found]),
        lambda path: read_segment(path, None, None, cipher),
        exact=True,
    )


def _latest(tables: list[pa.Table]) -> pa.Table:
    """The labels of ``tables`` (segments), the latest one for each request id and row."""
    if len({table.schema.field("label").type for table in tables}) > 1:
        tables = [_text_labels(table) for table in tables]
    table = concat(tables, LABEL_SCHEMA)
    if table.num_rows <= 1:
        return table
    latest = (
        table.sort_by("time")
        .group_by(["request_id", "row"], use_threads=False)
        .aggregate([("label", "last"), ("time", "last")])
    )
    return latest.rename_columns(["request_id", "row", "label", "time"])


def _text_labels(table: pa.Table) -> pa.Table:
    """``table`` with its labels as text: segments with numbers and with names read together."""
    index = table.schema.get_field_index("label")
    return table.set_column(index, "label", pc.cast(table["label"], pa.string()))


def read_labelled(
    home: Home,
    model: str,
    *,
    since: datetime | None = None,
    version: int | None = None,
    cipher: Cipher | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The logged predictions (as ``read_predictions`` gives them, ``limit``: of the newest rows
    only) that have a label, with ``label`` and ``label_time`` columns added, in time order.

    The window's keys are read first (three columns): when no logged row has a label — most
    models, most of the time — the inputs and outputs of the whole window are never read."""
    labels = read_labels(home, model, cipher=cipher)
    read = partial(
        read_predictions, home, model, since=since, version=version, cipher=cipher, limit=limit
    )
    keys = read(columns=["request_id", "row", "version"])
    if not labels.num_rows or not _labelled(keys, labels):
        return (
            keys.slice(0, 0)
            .append_column("label", pa.array([], labels.schema.field("label").type))
            .append_column("label_time", pa.array([], labels.schema.field("time").type))
        )
    return _join(read(), labels)


def _labelled(keys: pa.Table, labels: pa.Table) -> bool:
    """Whether any of the logged rows ``keys`` has a label."""
    matched: int = keys.select(["request_id", "row"]).join(labels, ["request_id", "row"]).num_rows
    return matched > 0


def _join(predictions: pa.Table, labels: pa.Table) -> pa.Table:
    keys = predictions.select(["request_id", "row"]).append_column(
        "position", pa.array(np.arange(predictions.num_rows, dtype=np.int64))
    )
    matched = keys.join(labels, ["request_id", "row"], join_type="inner").sort_by("position")
    return (
        predictions.take(matched["position"])
        .append_column("label", matched["label"])
        .append_column("label_time", matched["time"])
    )


# Evaluations.


@dataclass(frozen=True)
class Evaluation:
    """One metric of one version on its labelled live traffic, beside its registered value."""

    model: str
    version: int
    metric: str
    value: float
    rows: int
    registered: float | None
    """The version's metric of the same name recorded at registration, if any."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metric": self.metric,
            "value": self.value,
            "rows": self.rows,
            "registered": self.registered,
        }


def evaluate(
    home: Home,
    store: RegistryStore,
    model: str,
    window: str = "24h",
    *,
    cipher: Cipher | None = None,
) -> list[Evaluation]:
    """The metrics of each version of ``model`` on the labelled predictions of the traffic
    ``window`` (a time such as ``24h``, or the newest rows such as ``100000rows``): accuracy,
    precision, recall, F1 and (with class probabilities) AUC for a classifier, MAE and RMSE for a
    regressor. Written to ``evaluations`` and returned, each beside its registered value."""
    traffic = Window.parse(window)
    now = utc_now()
    since = None if traffic.span is None else now - traffic.span
    table = read_labelled(home, model, since=since, cipher=cipher, limit=traffic.rows)
    results = []
    for number in sorted(pc.unique(table["version"]).to_pylist()):
        version = store.get_version(model, number)
        part = _predicted(version, table.filter(pc.field("version") == number))
        for metric, value in version_metrics(version, part).items():
            registered = version.metrics.get(metric)
            results.append(Evaluation(model, number, metric, value, part.num_rows, registered))
    store_evaluations(store, results, window, now)
    return results


def store_evaluations(
    store: RegistryStore,
    results: Sequence[Evaluation],
    window: str,
    at: datetime,
    audit: AuditEntry | None = None,
) -> None:
    """Write ``results`` to the ``evaluations`` table in one transaction, under ``window`` (what
    traffic they were measured on) and the time ``at``, with ``audit`` appended in it."""
    if not results and audit is None:
        return
    rows = [
        {
            "model": result.model,
            "version": result.version,
            "computed_at": at,
            "window": window,
            "metric": result.metric,
            "value": result.value,
            "rows": result.rows,
        }
        for result in results
    ]
    with database_errors(store.engine), write_transaction(store.engine) as connection:
        if rows:
            connection.execute(insert(evaluations), rows)
        if audit is not None:
            append(connection, audit, at)


def _predicted(version: ModelVersion, table: pa.Table) -> pa.Table:
    """The rows of ``table`` whose prediction (``version``'s first output) was logged."""
    column = OUTPUT + version.signature.outputs[0].name
    if column not in table.column_names:
        return table.slice(0, 0)
    return table.filter(pc.is_valid(table[column]))


def version_metrics(version: ModelVersion, table: pa.Table) -> dict[str, float]:
    """The metrics of ``version`` on ``table`` (its labelled rows): the prediction is its first
    output; a classifier (a ``predict_proba`` output, or a first output that is not a float)
    gets accuracy, precision, recall, F1 (binary for labels 0/1, else averaged over the classes)
    and AUC; a regressor MAE and RMSE. Empty when no row has the prediction."""
    table = _predicted(version, table)
    if not table.num_rows:
        return {}
    predicted = table[OUTPUT + version.signature.outputs[0].name].to_numpy(zero_copy_only=False)
    labels = table["label"].to_numpy(zero_copy_only=False)
    if predicted.ndim != 1 or predicted.dtype == object and not isinstance(predicted[0], str):
        return {}  # a list output: not one class or value per row
    if not is_classifier(version.signature):
        if labels.dtype.kind != "f":
            raise InvalidInput(f"{version.ref} is a regressor: its labels must be numbers")
        return regression_metrics(labels, predicted.astype(np.float64))
    labels = _comparable(labels, predicted, version)
    probabilities = None
    if OUTPUT + PROBABILITIES in table.column_names:
        probabilities = _matrix(table[OUTPUT + PROBABILITIES])
    return classification_metrics(labels, predicted, probabilities)


def is_classifier(signature: Signature) -> bool:
    outputs = signature.outputs
    return any(o.name == PROBABILITIES for o in outputs) or outputs[0].datatype not in FLOATS


def _comparable(labels: np.ndarray, predicted: np.ndarray, version: ModelVersion) -> np.ndarray:
    """``labels`` as the same kind of value as the predicted classes."""
    text_predicted = predicted.dtype == object
    if labels.dtype == object and not text_predicted:
        try:
            return labels.astype(np.float64)
        except ValueError:
            raise InvalidInput(
                f"{version.ref} predicts numbered classes, but labels are names such as "
                f"{labels[0]!r}"
            ) from None
    if text_predicted and labels.dtype != object:
        raise InvalidInput(
            f"{version.ref} predicts named classes such as {predicted[0]!r}; send labels as "
            "those names"
        )
    return labels


def _matrix(column: pa.ChunkedArray) -> np.ndarray | None:
    """A list column of equal-length rows as a 2-D array (None if the lengths differ)."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if not len(lengths) or (lengths != lengths[0]).any() or not lengths[0]:
        return None
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(lengths), int(lengths[0]))


def classification_metrics(
    labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (binary when every class is 0 or 1, else the macro
    average) with scikit-learn, and AUC when ``probabilities`` (rows × classes, sorted classes)
    match the classes seen and both (or every) class has a label."""
    from sklearn import metrics

    classes = np.unique(np.concatenate([labels, predicted]))
    binary = classes.dtype != object and set(classes.tolist()) <= {0, 1}
    average = "binary" if binary else "macro"
    result = {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(
            metrics.precision_score(labels, predicted, average=average, zero_division=0)
        ),
        "recall": float(metrics.recall_score(labels, predicted, average=average, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, average=average, zero_division=0)),
    }
    auc = _auc(labels, classes, probabilities)
    if auc is not None:
        result["auc"] = auc
    return result


def _auc(labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray | None) -> float | None:
    from sklearn import metrics

    if probabilities is None or probabilities.shape[1] != len(classes):
        return None
    if not set(classes.tolist()) <= set(labels.tolist()):
        return None  # a class without labels: the AUC is not defined
    if len(classes) == 2:
        return float(metrics.roc_auc_score(labels == classes[1], probabilities[:, 1]))
    try:
        return float(
            metrics.roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)
        )
    except ValueError:
        return None  # scores that are not probabilities (rows not summing to 1)


def regression_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE and RMSE with scikit-learn."""
    from sklearn import metrics

    return {
        "mae": float(metrics.mean_absolute_error(labels, predicted)),
        "rmse": float(metrics.root_mean_squared_error(labels, predicted)),
    }
