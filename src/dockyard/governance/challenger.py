"""Challenger against champion on labelled traffic: each version's newest evaluation (the
``evaluations`` rows of ``monitoring.feedback``: live traffic, or a retraining's holdout) and the
one metric the two are compared on."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from dockyard.monitoring.alert_rules import LOWER_IS_BETTER
from dockyard.registry.db import database_errors
from dockyard.registry.records import ModelVersion
from dockyard.registry.tables import evaluations

MAIN_METRICS = ("auc", "f1", "accuracy", "rmse", "mae")
"""The model's main metric: the first of these that both versions were evaluated on."""


@dataclass(frozen=True)
class Evaluated:
    """A version's newest evaluation: its metrics, measured together on ``rows`` labelled rows."""

    version: ModelVersion
    metrics: dict[str, float]
    rows: int
    window: str


def newest_evaluation(engine: Engine, version: ModelVersion) -> Evaluated | None:
    """The metrics of ``version``'s newest evaluation (one computation: the rows sharing its
    newest ``computed_at``); None when it was never evaluated."""
    statement = (
        select(
            evaluations.c.computed_at,
            evaluations.c.metric,
            evaluations.c.value,
            evaluations.c.rows,
            evaluations.c.window,
        )
        .where(evaluations.c.model == version.model, evaluations.c.version == version.version)
        .order_by(evaluations.c.computed_at.desc(), evaluations.c.id.desc())
    )
    with database_errors(engine), engine.connect() as connection:
        rows = connection.execute(statement).all()
    if not rows:
        return None
    newest = [row for row in rows if row.computed_at == rows[0].computed_at]
    metrics = {row.metric: row.value for row in reversed(newest)}
    return Evaluated(version, metrics, newest[0].rows, newest[0].window)


def main_metric(challenger: Evaluated, champion: Evaluated) -> str | None:
    """The metric the two are compared on: the first of ``MAIN_METRICS`` both have."""
    return next(
        (m for m in MAIN_METRICS if m in challenger.metrics and m in champion.metrics), None
    )


def at_least_as_good(metric: str, challenger: float, champion: float) -> bool:
    """Whether ``challenger`` is no worse than ``champion`` on ``metric`` (lower is better for
    errors such as RMSE, higher for the rest)."""
    if metric in LOWER_IS_BETTER:
        return challenger <= champion
    return challenger >= champion
