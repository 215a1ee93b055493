"""Warming a version before it serves: a few rows predicted, so its first request does not pay
for lazy initialisation, and a version that cannot predict is caught before it is swapped in.

Registration keeps no reference rows, only their profile (``monitoring.profile``): each numeric
feature's evenly spaced sample and each categorical feature's most frequent values. The warm-up
rows are built from those: row ``i`` takes every numeric feature's value at the same quantile
and cycles through the categories. A version without a profile, or whose signature has inputs the
profile skips (tensors wider than one value per row), is not warmed; nor is an isolated one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from dockyard.datatypes import numpy_dtype
from dockyard.errors import PredictionFailed
from dockyard.registry.records import ModelVersion, TensorSpec
from dockyard.reliability.isolation import IsolatedRuntime
from dockyard.reliability.probe import on_new_thread, trial_in_child
from dockyard.serving.deployments import Deployment

logger = logging.getLogger(__name__)

WARM_ROWS = 8
PROBE_TIMEOUT_S = 60.0
"""How long the supervisor's trial of a new version may take (a fork, then a few rows)."""


def warm_rows(version: ModelVersion) -> dict[str, np.ndarray] | None:
    """Request tensors of ``WARM_ROWS`` rows drawn from the version's reference profile, one per
    input, as a client would send them; None when the profile cannot give them."""
    profile = version.profile
    if not profile:
        return None
    features: Mapping[str, Any] = profile.get("features", {})
    tensors: dict[str, np.ndarray] = {}
    for spec in version.signature.inputs:
        entry = features.get(spec.name)
        if entry is None:
            return None
        column = _column(spec, entry)
        if column is None:
            return None
        tensors[spec.name] = column
    return tensors or None


def warm_here(deployment: Deployment) -> None:
    """Warm ``deployment`` in this process (a server with one worker, on a thread of its own);
    PredictionFailed naming the version when it cannot predict its warm-up rows."""
    rows = _rows_for(deployment)
    if rows is None:
        return
    try:
        _predict(deployment, rows)
    except Exception as exc:
        raise _cold(deployment, f"{type(exc).__name__}: {exc}") from exc


def warm_in_child(deployment: Deployment) -> None:
    """Try ``deployment``'s warm-up rows in a throwaway child (``reliability.probe``: the
    supervisor never predicts itself); each worker then warms its own copy (``warm_quietly``)."""
    rows = _rows_for(deployment)
    if rows is None:
        return
    failure = trial_in_child(lambda: _predict(deployment, rows), PROBE_TIMEOUT_S)
    if failure is not None:
        raise _cold(deployment, failure)


def warm_quietly(deployment: Deployment) -> None:
    """Warm a worker's copy of a version the supervisor tried already; a failure is logged."""
    rows = _rows_for(deployment)
    if rows is None:
        return
    # On a thread of its own: this worker's main thread is the one its supervisor forked from.
    failure = on_new_thread(lambda: _predict(deployment, rows))
    if failure:
        reason = failure.decode(errors="replace")
        logger.error("%s failed its warm-up prediction: %s", deployment.version.ref, reason)


def _rows_for(deployment: Deployment) -> dict[str, np.ndarray] | None:
    """The warm-up rows of a deployment; None for an isolated model, whose predictions run in a
    child forked on its first call (where a warm-up would only fork it early)."""
    if isinstance(deployment.runtime, IsolatedRuntime):
        return None
    return warm_rows(deployment.version)


def _predict(deployment: Deployment, rows: Mapping[str, np.ndarray]) -> None:
    """Predict ``rows`` with the deployment's runtime, through its input plan, as a request
    would be."""
    deployment.runtime.predict(deployment.input_plan.prepare(rows), ())


def _cold(deployment: Deployment, reason: str) -> PredictionFailed:
    return PredictionFailed(
        f"version {deployment.version.ref} failed its warm-up prediction on rows of its "
        f"reference profile: {reason}"
    )


def _column(spec: TensorSpec, entry: Mapping[str, Any]) -> np.ndarray | None:
    """``WARM_ROWS`` values of one feature from its profile entry, in the spec's datatype."""
    if entry.get("kind") == "numeric":
        sample = entry.get("sample") or []
        if not sample:
            return None
        picks = np.linspace(0, len(sample) - 1, WARM_ROWS).round().astype(np.int64)
        values: list[Any] = [sample[i] for i in picks]
    else:
        categories = entry.get("values") or []
        if not categories:
            return None
        values = [categories[i % len(categories)] for i in range(WARM_ROWS)]
    if spec.datatype == "BYTES":
        return np.array([str(value) for value in values], dtype=object)
    if spec.datatype == "BOOL":
        return np.array([str(value) in ("True", "1", "1.0") for value in values])
    try:
        return np.array([float(value) for value in values]).astype(numpy_dtype(spec.datatype))
    except (TypeError, ValueError):
        return None
