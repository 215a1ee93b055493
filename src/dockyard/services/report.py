"""The compliance report of one model version: what a reviewer needs in one document — its card
and lineage, the promotion requests and who decided them, the policy's gates and their results
now, the model's audit trail (and whether its chain is intact), and a monitoring summary.

Assembled from what the other parts stored, through their own readers; rendered by
``governance.rendering.render_report`` as one HTML page, or as JSON with the same facts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from dockyard.errors import DockyardError, InvalidInput
from dockyard.governance.cards import card_document
from dockyard.monitoring.drift import latest_drift
from dockyard.monitoring.overview import overview, parse_window
from dockyard.registry.audit import read_entries
from dockyard.registry.audit_chain import verify
from dockyard.registry.promotions import PromotionStore
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import ModelRef, check_name
from dockyard.registry.store import utc_now
from dockyard.security.principals import Action, Principal, require
from dockyard.services import promotions
from dockyard.services.workspace import Workspace

MONITORING_WINDOW = "30d"
"""The traffic, evaluations and alerts a report summarises: the last 30 days (the dashboard's
readers allow at most 31)."""
AUDIT_ENTRIES = 1000
"""The most audit entries a report lists, the model's newest (``dockyard audit log`` has all)."""


def build_report(
    workspace: Workspace,
    actor: Principal,
    name: str,
    version: int | None = None,
    *,
    window: str | None = None,
) -> dict[str, Any]:
    """The report of ``name``'s version ``version`` (None: the version its production alias
    points at, else its latest not archived), as JSON; ``window`` (``7d``, at most ``31d``;
    None: ``MONITORING_WINDOW``) is the monitoring summary's span. The caller needs
    ``read_audit`` on the model."""
    require(actor, Action.READ_AUDIT, check_name(name))
    window = window or MONITORING_WINDOW
    try:
        parse_window(window)
    except InvalidInput:
        raise InvalidInput(
            f"window {window[:40]!r}: give the monitoring summary's span, from 1s to 31d (such as "
            "24h or 7d)"
        ) from None
    store = workspace.store
    found = store.resolve(ModelRef(name, version=version))
    entries = read_entries(store.engine, model=name, limit=AUDIT_ENTRIES + 1)
    problems = verify(store.engine)
    return {
        "generated_at": utc_now().isoformat(),
        "generated_by": actor.actor,
        "model": found.model,
        "version": found.version,
        "ref": found.ref,
        "aliases": list(found.aliases),
        "archived": found.archived,
        "metrics": dict(found.metrics),
        "card": card_document(found),
        "approvals": [
            promotion.to_dict()
            for promotion in PromotionStore(store.engine).all(model=name)
            if promotion.version == found.version
        ],
        "gates": _gates(workspace, found),
        "audit": {
            "entries": [entry.to_dict() for entry in entries[-AUDIT_ENTRIES:]],
            "complete": len(entries) <= AUDIT_ENTRIES,
            "chain_intact": not problems,
            "chain_problems": [problem.to_dict() for problem in problems],
        },
        "monitoring": _monitoring(workspace, found, window),
    }


def _gates(workspace: Workspace, version: ModelVersion) -> dict[str, Any]:
    """Every gate of the policy for pointing the first protected alias at ``version``, now; when
    they cannot be evaluated (a mistake in ``[governance]``), why not."""
    try:
        checked = promotions.check(workspace, version.ref)
    except DockyardError as exc:
        return {"evaluated": False, "reason": exc.message}
    return {
        "evaluated": True,
        "alias": checked.alias,
        "current_version": None if checked.current is None else checked.current.version,
        "passed": checked.passed,
        "results": [gate.to_dict() for gate in checked.gates],
    }


def _monitoring(workspace: Workspace, version: ModelVersion, window: str) -> dict[str, Any]:
    """Traffic over ``window`` (every version of the model: the prediction log's counts and
    latency), the newest drift report of ``version`` per feature, the newest live value of each
    of its evaluated metrics, and the model's open alerts."""
    settings = workspace.settings
    seen = overview(
        workspace.home,
        workspace.store,
        settings,
        window,
        lambda model: model == version.model,
        None,
    )
    [model] = seen["models"]
    traffic = model["traffic"]
    evaluations = [
        {
            "metric": series["metric"],
            "value": series["value"][-1],
            "registered": series["registered"],
            "rows": series["rows"][-1],
            "computed_at": datetime.fromtimestamp(series["t"][-1], UTC).isoformat(),
        }
        for series in model["evaluations"]
        if series["version"] == version.version
    ]
    return {
        "window": window,
        "prediction_log": settings.prediction_log,
        "traffic": None
        if traffic is None
        else {key: traffic[key] for key in ("requests", "rows", "p50_ms", "p99_ms", "complete")},
        "drift": [
            {
                "feature": row.feature,
                "method": row.method,
                "score": _finite(row.score),
                "p_value": _finite(row.p_value),
                "drifted": row.drifted,
                "rows": row.rows,
                "window": row.window,
                "computed_at": row.computed_at.isoformat(),
            }
            for row in latest_drift(workspace.store.engine, version.model, version.version)
        ],
        "evaluations": evaluations,
        "alerts": [alert for alert in seen["alerts"] if alert["model"] == version.model],
    }


def _finite(value: float | None) -> float | None:
    """``value``, or None for none, NaN or infinity (which JSON cannot hold)."""
    return value if value is not None and math.isfinite(value) else None
