"""Retraining from production traffic: the user's training function, fed the logged inputs joined to
their delayed labels, registers a new version whose lineage names its parent, and the new version
(the challenger) is measured against the one that served that traffic (the champion) on the newest
labelled rows, which neither was trained on.

The training function is the operator's own code, imported from the operator's environment by the
command line (never over HTTP): ``fit(features, labels, reference) -> model``, where ``features``
is a 2-D array of the logged features (a pandas DataFrame when one is text), ``labels`` a 1-D
array, and ``reference`` the original reference data when given (else None).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dockyard.errors import InvalidInput
from dockyard.monitoring.feedback import (
    Evaluation,
    read_labelled,
    store_evaluations,
    version_metrics,
)
from dockyard.monitoring.predlog import INPUT, OUTPUT, log_cipher
from dockyard.registry.audit import AuditEntry
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import utc_now
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.datafiles import as_reference
from dockyard.services.predict import LoadedModel
from dockyard.services.register import Registration, register
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace

FitFunction = Callable[[Any, np.ndarray, Any], Any]
MIN_ROWS = 20
"""Fewest labelled rows a retraining takes: fewer cannot make both a training and a holdout set."""


@dataclass(frozen=True)
class Retrained:
    """What a retraining made: the challenger, the champion, and both measured on the holdout."""

    challenger: ModelVersion
    champion: ModelVersion
    train_rows: int
    holdout_rows: int
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]


def import_fit(entrypoint: str, folder: Path | None = None) -> FitFunction:
    """The function ``module:function`` names, imported with ``folder`` (default: the current
    one) first on the module path, as ``python -c "import module"`` run there would find it."""
    module_name, sep, function_name = entrypoint.partition(":")
    if not sep or not module_name or not function_name:
        raise InvalidInput(f"--entrypoint {entrypoint!r} must look like module:function")
    sys.path.insert(0, str((folder or Path.cwd()).resolve()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r} for --entrypoint: {exc}") from exc
    finally:
        sys.path.pop(0)
    fit = getattr(module, function_name, None)
    if not callable(fit):
        raise InvalidInput(f"{module_name} has no function {function_name!r}")
    return fit  # type: ignore[no-any-return]


def retrain(
    workspace: Workspace,
    actor: Principal,
    ref: str,
    fit: FitFunction,
    *,
    window: timedelta,
    holdout: float = 0.2,
    reference: Any = None,
    alias: str | None = None,
) -> Retrained:
    """Train a challenger for the model ``ref`` names on its labelled traffic of the last
    ``window``, register it, and measure it against the version ``ref`` resolves to (the
    champion) on the newest ``holdout`` share of those rows, which training does not see."""
    if not 0 < holdout < 1:
        raise InvalidInput(f"holdout must be between 0 and 1, got {holdout}")
    champion = workspace.resolve(ref)
    require(actor, SERVICES["register"], champion.model)
    since = utc_now() - window
    table = read_labelled(
        workspace.home,
        champion.model,
        since=since,
        cipher=log_cipher(workspace.settings, workspace.home),
    )
    rows = table.num_rows
    if rows < MIN_ROWS:
        raise InvalidInput(
            f"{champion.model} has {rows} labelled predictions since {since:%Y-%m-%d %H:%M} UTC; "
            f"retraining needs at least {MIN_ROWS}: send labels with dockyard monitor feedback, "
            "or widen --window"
        )
    held = max(1, round(rows * holdout))
    train, test = table.slice(0, rows - held), table.slice(rows - held)
    features, names = _features(train)
    model = fit(features, _labels(train), reference)
    challenger = register(
        workspace,
        model,
        Registration(
            name=champion.model,
            reference_data=features,
            feature_names=names,
            params={"retrained_from": champion.ref, "train_rows": train.num_rows},
            description=f"retrained from {champion.ref} on {train.num_rows} labelled rows",
            parent=champion.ref,
            alias=alias,
        ),
        actor,
    )
    loaded = LoadedModel(version=challenger, runtime=load_for_serving(workspace, challenger))
    champion_metrics = version_metrics(champion, test)
    challenger_metrics = version_metrics(challenger, _with_outputs(test, loaded))
    audit = AuditEntry(
        actor.actor,
        "model.retrain",
        challenger.ref,
        challenger.model,
        {
            "champion": champion.ref,
            "train_rows": train.num_rows,
            "holdout_rows": held,
            "champion_metrics": champion_metrics,
            "challenger_metrics": challenger_metrics,
        },
    )
    store_evaluations(
        workspace.store,
        [
            *_evaluations(held, champion, champion_metrics),
            *_evaluations(held, challenger, challenger_metrics),
        ],
        f"retrain holdout {held}rows",
        utc_now(),
        audit,
    )
    return Retrained(
        challenger, champion, train.num_rows, held, champion_metrics, challenger_metrics
    )


def _feature_columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {
        name[len(INPUT) :]: table[name].to_numpy(zero_copy_only=False)
        for name in table.column_names
        if name.startswith(INPUT)
    }


def _features(table: pa.Table) -> tuple[Any, list[str] | None]:
    return as_reference(_feature_columns(table))


def _labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table["label"].to_numpy(zero_copy_only=False))


def _with_outputs(table: pa.Table, loaded: LoadedModel) -> pa.Table:
    """``table`` with its logged outputs replaced by what ``loaded`` predicts for its inputs."""
    predicted = loaded.predict(_feature_columns(table))
    for name, values in predicted.items():
        column = OUTPUT + name
        array = pa.array(values.tolist() if values.ndim > 1 else values)
        if column in table.column_names:
            table = table.set_column(table.column_names.index(column), column, array)
        else:
            table = table.append_column(column, array)
    return table


def _evaluations(rows: int, version: ModelVersion, metrics: dict[str, float]) -> list[Evaluation]:
    """``version``'s holdout metrics as rows of ``evaluations``, beside those of live traffic."""
    return [
        Evaluation(version.model, version.version, metric, value, rows, version.metrics.get(metric))
        for metric, value in metrics.items()
    ]
