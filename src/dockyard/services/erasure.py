"""The right to erasure: every logged record of one data subject removed — the prediction log's
rows whose input ``feature`` holds the subject's value, the labels sent for those rows, the value
where drift reports quote it — and one ``data.erase`` audit entry that says so without the value.

While a server writes the log: a request answered before the erasure began sits in its worker's
queue for up to ``log_flush_s`` before it is written, so the erasure first waits that long (plus
``SETTLE_GRACE_S``), then rewrites what is on disk, holding each model folder's rewrite lock
(compactions pause; writers only add new files, so other subjects' rows, old and new, stay as
they were). Hence every row answered before the call is erased as long as the writers keep up
with their flush interval; a request answered while it runs is new data, and a writer far behind
(a full disk: it logs that it sheds rows) may write older rows later: erase again to be sure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, select, update

from dockyard.encryption import Cipher
from dockyard.errors import InvalidInput
from dockyard.governance.pseudonyms import open_pseudonymizer
from dockyard.home import Home
from dockyard.monitoring.feedback import labels_folder
from dockyard.monitoring.predlog import (
    INPUT,
    LOCK_NAME,
    all_segments,
    exclusive_lock,
    log_cipher,
    predictions_folder,
    read_segment,
    rewrite_segment,
)
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.tables import drift_reports
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.workspace import Workspace

SETTLE_GRACE_S = 1.0
"""Beyond ``log_flush_s``: the time a writer takes to write what it flushed."""
KEY_SEPARATOR = "\x1f"
"""Joins a request id and a row into one key (the row, digits only, comes last: unambiguous)."""
EXAMPLES = "unseen_examples"
"""The drift reports' details that quote request values (``monitoring.drift``)."""

Subject = str | int | float


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed: per model, the logged rows and the labels; the drift reports
    whose details quoted the value."""

    feature: str
    rows: dict[str, int]
    labels: dict[str, int]
    drift_reports: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "rows": self.rows,
            "labels": self.labels,
            "drift_reports": self.drift_reports,
        }


def erase_subject(
    workspace: Workspace,
    actor: Principal,
    feature: str,
    value: object,
    model: str | None = None,
) -> Erasure:
    """Remove every logged record whose input ``feature`` equals ``value`` (compared as the log
    stores the column: text, or a number when ``value`` reads as one) from ``model``'s log, or
    every registered model's; see the module docstring for what a running server guarantees.
    InvalidInput when no version of those models takes an input ``feature``."""
    require(actor, SERVICES["erase_subject"], model)
    subject = _checked(value)
    names = _models(workspace, model)
    _check_feature(workspace, names, feature, model)
    time.sleep(workspace.settings.log_flush_s + SETTLE_GRACE_S)
    cipher = log_cipher(workspace.settings, workspace.home)
    match = Match.of(
        INPUT + feature, subject, open_pseudonymizer(workspace.settings, workspace.home)
    )
    rows: dict[str, int] = {}
    labels: dict[str, int] = {}
    for name in names:
        rows[name], labels[name] = _erase_model(workspace.home, name, match, cipher)
    engine = workspace.store.engine
    with database_errors(engine), write_transaction(engine) as connection:
        quoted = _unquote(connection, names, feature, match.texts)
        erasure = Erasure(feature, rows, labels, quoted)
        entry = AuditEntry(actor.actor, "data.erase", INPUT + feature, model, erasure.to_dict())
        append(connection, entry)
    return erasure


def _unquote(
    connection: Connection, names: Sequence[str], feature: str, texts: Sequence[str]
) -> int:
    """Take ``texts`` out of the examples the drift reports of ``feature`` quote; how many
    reports quoted one."""
    reports = connection.execute(
        select(drift_reports.c.id, drift_reports.c.details).where(
            drift_reports.c.model.in_(names), drift_reports.c.feature == feature
        )
    ).all()
    quoted = 0
    for report_id, details in reports:
        examples = details.get(EXAMPLES) or []
        kept = [example for example in examples if example not in texts]
        if len(kept) < len(examples):
            quoted += 1
            connection.execute(
                update(drift_reports)
                .where(drift_reports.c.id == report_id)
                .values(details={**details, EXAMPLES: kept})
            )
    return quoted


def _checked(value: object) -> Subject:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput("the subject's value must be a string or a number")
    if isinstance(value, str) and not value:
        raise InvalidInput("the subject's value is empty: give the value that identifies them")
    return value


def _models(workspace: Workspace, model: str | None) -> list[str]:
    if model is not None:
        return [workspace.store.get_model(model).name]
    return sorted(found.name for found in workspace.store.list_models())


def _check_feature(
    workspace: Workspace, names: Sequence[str], feature: str, model: str | None
) -> None:
    """InvalidInput unless a version of ``names`` takes an input ``feature``: a misspelt name
    would erase nothing and say so only in a count."""
    inputs: set[str] = set()
    for name in names:
        for version in workspace.store.list_versions(name):
            inputs.update(spec.name for spec in version.signature.inputs)
    if feature not in inputs:
        scope = f"model {model!r}" if model else "any registered model"
        known = ", ".join(sorted(inputs)[:20]) or "none"
        raise InvalidInput(
            f"no version of {scope} takes an input named {feature!r}; inputs are: {known}"
        )


@dataclass(frozen=True)
class Match:
    """The rows of a segment that hold the subject in ``column``: a text column holding one of
    ``texts`` (the value, or its keyed pseudonym where the ``hash`` rule wrote that), a number
    column holding ``number``."""

    column: str
    texts: tuple[str, ...]
    number: float | None

    @classmethod
    def of(cls, column: str, subject: Subject, pseudonym: Callable[[str], str]) -> Match:
        text = str(subject)
        try:
            number: float | None = float(subject)
        except ValueError:
            number = None
        return cls(column, (text, pseudonym(text)), number)

    def marks(self, table: pa.Table) -> pa.ChunkedArray:
        """True for each row of ``table`` that holds the subject (none when it lacks the
        column, or the column cannot hold it: a list, a fraction in whole numbers)."""
        kind = table.schema.field(self.column).type if self.column in table.column_names else None
        if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return pc.is_in(table[self.column], value_set=pa.array(self.texts, kind))
        number = self.number
        if kind is not None and number is not None:
            if pa.types.is_floating(kind):
                return pc.equal(table[self.column], pa.scalar(number, kind))
            if pa.types.is_integer(kind) and number.is_integer():
                return pc.equal(table[self.column], pa.scalar(int(number), kind))
        return pa.chunked_array([pa.repeat(False, table.num_rows)])


def _erase_model(home: Home, model: str, match: Match, cipher: Cipher | None) -> tuple[int, int]:
    """Erase the matching rows of ``model``'s log and their labels: (rows, labels) removed.
    The labels go first, so erasing again after a failure between the two finds both."""
    folder = predictions_folder(home, model)
    if not folder.is_dir():
        return 0, 0
    with exclusive_lock(folder):
        hits: list[Path] = []
        keys: set[str] = set()
        for path in all_segments(folder):
            table = read_segment(path, ["request_id", "row", match.column], None, cipher)
            marked = pc.fill_null(match.marks(table), False)
            if pc.any(marked).as_py():
                hits.append(path)
                keys.update(_keys(table.filter(marked)).to_pylist())
        labels = _erase_labels(home, model, keys, cipher)
        rows = sum(rewrite_segment(path, match.marks, cipher) for path in hits)
    return rows, labels


def _erase_labels(home: Home, model: str, keys: set[str], cipher: Cipher | None) -> int:
    """Remove ``model``'s labels of the requests and rows ``keys`` name (``_keys``)."""
    folder = labels_folder(home, model)
    if not keys or not folder.is_dir():
        return 0
    wanted = pa.array(sorted(keys), pa.string())

    def marks(table: pa.Table) -> pa.ChunkedArray:
        return pc.is_in(_keys(table), value_set=wanted)

    with exclusive_lock(folder, LOCK_NAME):  # the lock label compaction takes
        return sum(rewrite_segment(path, marks, cipher) for path in all_segments(folder))


def _keys(table: pa.Table) -> pa.ChunkedArray:
    """Each row's request id and row as one text (``KEY_SEPARATOR`` between)."""
    rows = pc.cast(table["row"], pa.string())
    return pc.binary_join_element_wise(table["request_id"], rows, KEY_SEPARATOR)
