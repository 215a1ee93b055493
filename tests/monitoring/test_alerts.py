"""Alert rules evaluated against a real registry database (a SQLite file; PostgreSQL too where
``DOCKYARD_TEST_POSTGRES_URL`` is set): each kind fires and clears on the rows it reads, a rule
that keeps firing is one open alert, a cleared one is resolved, and bad rules are refused with
the rule and the key named."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.monitoring.alert_rules import DriftRule, Outcome, Sources, Traffic, traffic_of
from dockyard.monitoring.alerts import (
    FIRING,
    OPEN,
    RESOLVED,
    AlertEngine,
    check_alerting,
    list_alerts,
)
from dockyard.monitoring.metrics import LATENCY_BOUNDS_S, Snapshot
from dockyard.registry.records import ArtifactRef
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import alerts, drift_reports, evaluations, security_events
from registry.conftest import (  # noqa: F401 (the registry tests' database fixtures)
    DIGEST,
    LINEAGE,
    SIGNATURE,
    database_url,
    postgres_admin,
)

START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:  # noqa: F811
    registry = RegistryStore.open(database_url)
    yield registry
    registry.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def engine_for(
    store: RegistryStore, clock: Clock, rules: dict[str, dict[str, Any]], **kwargs: Any
) -> AlertEngine:
    rules_checked = check_alerting(Settings(alerts=rules, metrics=True))
    return AlertEngine(rules_checked, store, clock=clock, **kwargs)


def report(
    store: RegistryStore, at: datetime, drifted: dict[str, bool], model: str = "fraud"
) -> None:
    """One drift computation of ``model`` v1: a row per feature, flagged as given."""
    rows = [
        {
            "model": model,
            "version": 1,
            "computed_at": at,
            "window": "100rows",
            "rows": 100,
            "feature": feature,
            "method": "psi",
            "score": 0.9 if flagged else 0.01,
            "p_value": None,
            "drifted": flagged,
            "details": {},
        }
        for feature, flagged in drifted.items()
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(drift_reports), rows)


def alert_rows(store: RegistryStore) -> list[Any]:
    with store.engine.connect() as connection:
        return connection.execute(select(alerts).order_by(alerts.c.id)).all()


def test_a_drift_rule_fires_once_while_drift_lasts_then_resolves(
    store: RegistryStore, clock: Clock
) -> None:
    engine = engine_for(store, clock, {"fraud-drift": {"kind": "drift", "model": "fraud"}})
    report(store, clock.now, {"x0": False, "x1": True, "x2": False, "x3": True})

    fired = engine.run_once()

    assert [(c.state, c.alert.rule, c.value) for c in fired] == [(FIRING, "fraud-drift", 2.0)]
    assert "x1 (psi 0.9)" in fired[0].message
    assert "x3" in fired[0].message
    assert "x0" not in fired[0].message
    (row,) = alert_rows(store)
    assert (row.state, row.model, row.value, row.fired_at) == (OPEN, "fraud", 2.0, START)

    # Still drifting (one feature now): the same alert, updated; nothing announced.
    report(store, clock.advance(60), {"x0": False, "x1": True, "x2": False, "x3": False})
    assert engine.run_once() == []
    (row,) = alert_rows(store)
    assert (row.state, row.value, row.fired_at, row.last_seen_at) == (OPEN, 1.0, START, clock.now)
    assert "x3" not in row.message

    # The latest report is clean: resolved, once.
    report(store, clock.advance(60), {"x0": False, "x1": False, "x2": False, "x3": False})
    resolved = engine.run_once()
    assert [(c.state, c.alert.id, c.value) for c in resolved] == [(RESOLVED, row.id, 0.0)]
    assert "no drift in fraud v1" in resolved[0].message
    (row,) = alert_rows(store)
    assert (row.state, row.resolved_at, row.value) == (RESOLVED, clock.now, 1.0)
    assert engine.run_once() == []
    assert list_alerts(store.engine) == []
    assert [a.id for a in list_alerts(store.engine, everything=True)] == [row.id]

    # Drifting again is a new alert.
    report(store, clock.advance(60), {"x0": True, "x1": False, "x2": False, "x3": False})
    (again,) = engine.run_once()
    assert again.state == FIRING
    assert again.alert.id != row.id
    assert [a.state for a in list_alerts(store.engine, everything=True)] == [OPEN, RESOLVED]


def test_a_drift_rule_watches_only_its_features_and_model(
    store: RegistryStore, clock: Clock
) -> None:
    engine = engine_for(
        store,
        clock,
        {
            "x0-only": {"kind": "drift", "model": "fraud", "features": ["x0"]},
            "churn": {"kind": "drift", "model": "churn"},
        },
    )
    report(store, clock.now, {"x0": False, "x1": True})

    assert engine.run_once() == []

    report(store, clock.advance(1), {"x0": True, "x1": True})
    assert [c.alert.rule for c in engine.run_once()] == ["x0-only"]


def test_an_accuracy_rule_compares_with_its_bounds_and_the_registered_metric(
    store: RegistryStore, clock: Clock
) -> None:
    store.create_version(
        model="fraud",
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=SIGNATURE,
        lineage=LINEAGE,
        metrics={"accuracy": 0.9, "rmse": 1.0},
    )
    engine = engine_for(
        store,
        clock,
        {
            "accuracy-drop": {"kind": "accuracy", "model": "fraud", "metric": "accuracy",
                              "max_drop": 0.1, "min_rows": 50},
            "accuracy-floor": {"kind": "accuracy", "model": "fraud", "metric": "accuracy",
                               "min": 0.7},
            "rmse-rise": {"kind": "accuracy", "model": "fraud", "metric": "rmse",
                          "max_drop": 0.2},
        },
    )  # fmt: skip

    def evaluated(metric: str, value: float, rows: int = 100) -> None:
        with store.engine.begin() as connection:
            connection.execute(
                insert(evaluations).values(
                    model="fraud", version=1, computed_at=clock.advance(1), window="24h",
                    metric=metric, value=value, rows=rows,
                )
            )  # fmt: skip

    assert engine.run_once() == []  # no evaluation yet
    evaluated("accuracy", 0.85)
    evaluated("rmse", 1.1)
    assert engine.run_once() == []
    evaluated("accuracy", 0.75, rows=10)  # too few labelled rows for the drop rule
    assert engine.run_once() == []
    evaluated("accuracy", 0.75)
    evaluated("rmse", 1.3)  # a rise of rmse is the loss
    changes = {c.alert.rule: c for c in engine.run_once()}
    assert set(changes) == {"accuracy-drop", "rmse-rise"}
    assert "0.15 worse than 0.9 at registration" in changes["accuracy-drop"].message
    assert changes["accuracy-drop"].value == 0.75

    evaluated("accuracy", 0.65)
    changes = {c.alert.rule: c for c in engine.run_once()}
    assert set(changes) == {"accuracy-floor"}
    assert "below 0.7" in changes["accuracy-floor"].message

    evaluated("accuracy", 0.95)
    evaluated("rmse", 0.9)
    changes = {c.alert.rule: c.state for c in engine.run_once()}
    assert changes == dict.fromkeys(["accuracy-drop", "accuracy-floor", "rmse-rise"], RESOLVED)


def test_a_security_events_rule_counts_the_events_of_its_kinds_in_its_window(
    store: RegistryStore, clock: Clock
) -> None:
    engine = engine_for(
        store,
        clock,
        {"auth": {"kind": "security_events", "kinds": ["auth_failed"], "max": 5, "window": "5m"}},
    )

    def events(kind: str, count: int, ago_s: float) -> None:
        with store.engine.begin() as connection:
            connection.execute(
                insert(security_events).values(
                    at=clock.now - timedelta(seconds=ago_s), kind=kind, principal="", key_id="",
                    method="GET", path="/api/models", status=401, client="127.0.0.1:1",
                    detail="bad key", count=count,
                )
            )  # fmt: skip

    events("auth_failed", 4, ago_s=10)
    events("rate_limited", 50, ago_s=10)  # another kind
    events("auth_failed", 50, ago_s=400)  # before the window
    assert engine.run_once() == []

    events("auth_failed", 2, ago_s=0)
    (fired,) = engine.run_once()
    assert (fired.state, fired.value) == (FIRING, 6.0)
    assert fired.message == "6 security events (auth_failed) in the last 5m (max 5)"

    clock.advance(301)  # the window moves past them
    (resolved,) = engine.run_once()
    assert (resolved.state, resolved.value) == (RESOLVED, 0.0)


def traffic(
    requests: dict[tuple[str, int], float], latency_ms: dict[str, list[float]] | None = None
) -> Traffic:
    """Cumulative counters as the metrics hold them; latencies bucketed at 5, 10, 50, 100 ms."""
    bounds = [0.005, 0.01, 0.05, 0.1, math.inf]
    buckets = {}
    for model, values in (latency_ms or {}).items():
        for bound in bounds:
            buckets[(model, bound)] = float(sum(value / 1000 <= bound for value in values))
    return Traffic(requests, buckets)


def test_error_rate_and_latency_rules_look_at_the_change_over_their_window(
    store: RegistryStore, clock: Clock
) -> None:
    now = {"traffic": traffic({})}
    engine = engine_for(
        store,
        clock,
        {
            "errors": {"kind": "error_rate", "model": "fraud", "max": 0.05, "window": "5m"},
            "client-errors": {"kind": "error_rate", "max": 0.05, "statuses": ["4xx"],
                              "min_requests": 1, "window": "5m"},
            "slow": {"kind": "p99_latency", "model": "fraud", "max_ms": 45, "window": "5m"},
        },
        traffic=lambda: now["traffic"],
    )  # fmt: skip
    # Requests answered before the first evaluation count: the counters started with the server.
    clock.advance(60)
    now["traffic"] = traffic(
        {("fraud", 200): 92, ("fraud", 500): 8, ("churn", 200): 5},
        {"fraud": [3.0] * 95 + [30.0] * 5},
    )
    (fired,) = engine.run_once()
    assert (fired.alert.rule, fired.value) == ("errors", 0.08)
    assert "8.0% of 100 requests to fraud in the last 5m answered 5xx" in fired.message

    clock.advance(60)
    now["traffic"] = traffic(
        {("fraud", 200): 182, ("fraud", 500): 18, ("churn", 200): 5, ("churn", 404): 20},
        {"fraud": [3.0] * 195 + [30.0] * 1 + [80.0] * 4},
    )
    changes = {c.alert.rule: c for c in engine.run_once()}
    assert set(changes) == {"client-errors", "slow"}  # "errors" stays open, not re-announced
    assert changes["client-errors"].value == pytest.approx(20 / 225)  # all models, 4xx only
    assert changes["slow"].value == pytest.approx(75.0)  # the 198th of 200: half into (50, 100]
    assert {a.rule: a.value for a in list_alerts(store.engine)}["errors"] == 18 / 200
    assert len(list_alerts(store.engine)) == 3

    clock.advance(301)  # no requests for a whole window: nothing to alert on
    assert {c.alert.rule: c.state for c in engine.run_once()} == dict.fromkeys(
        ["errors", "client-errors", "slow"], RESOLVED
    )


def test_a_counter_reset_counts_from_zero() -> None:
    before = Traffic({("fraud", 200): 100.0})
    after = Traffic({("fraud", 200): 7.0, ("fraud", 500): 3.0})

    assert after.minus(before).requests == {("fraud", 200): 7.0, ("fraud", 500): 3.0}


def test_the_metrics_totals_become_requests_and_latency_by_model_and_status() -> None:
    def stats(*seconds: float) -> list[float]:
        buckets = [0.0] * (len(LATENCY_BOUNDS_S) + 1)
        for value in seconds:
            buckets[bisect.bisect_left(LATENCY_BOUNDS_S, value)] += 1
        return [len(seconds), sum(seconds), *buckets]

    totals = Snapshot(
        requests={
            ("fraud", 1, "v2", 200): stats(0.002, 0.002, 0.2),
            ("fraud", 2, "v1", 200): stats(0.002),
            ("fraud", None, "v2", 404): stats(0.0001),
        }
    )

    found = traffic_of(totals)

    assert found.requests == {("fraud", 200): 4.0, ("fraud", 404): 1.0}
    assert found.answered("fraud", [4]) == 1.0
    assert found.latency[("fraud", 0.0025)] == 4.0  # cumulative: 3 at 2 ms and 1 below
    assert found.latency[("fraud", 0.25)] == 5.0
    assert found.latency[("fraud", math.inf)] == 5.0


def test_the_latency_quantile_interpolates_within_its_bucket() -> None:
    rng = np.random.default_rng(0)
    latencies_ms = rng.lognormal(mean=2.0, sigma=0.5, size=10_000)
    bounds = [0.001 * 2**i for i in range(12)] + [math.inf]
    buckets = {("m", bound): float((latencies_ms / 1000 <= bound).sum()) for bound in bounds}
    p99, total = Traffic({}, buckets).latency_quantile("m", 0.99) or (0.0, 0.0)

    exact = np.quantile(latencies_ms, 0.99) / 1000
    lower = max(b for b in bounds if b < exact)
    upper = min(b for b in bounds if b >= exact)
    assert total == 10_000
    assert lower <= p99 <= upper
    assert Traffic({}, {}).latency_quantile("m", 0.99) is None
    # Beyond the last finite bound, that bound is all a histogram knows.
    assert Traffic({}, {("m", 0.1): 0.0, ("m", math.inf): 5.0}).latency_quantile("m", 0.99) == (
        0.1,
        5.0,
    )


def test_an_open_alert_of_a_removed_rule_is_resolved(store: RegistryStore, clock: Clock) -> None:
    report(store, clock.now, {"x0": True})
    engine_for(store, clock, {"old": {"kind": "drift", "model": "fraud"}}).run_once()

    (retired,) = engine_for(store, clock, {}).run_once()

    assert (retired.state, retired.kind, retired.alert.rule) == (RESOLVED, "retired", "old")
    assert "no longer configured" in retired.message
    assert list_alerts(store.engine) == []


class BrokenRule(DriftRule):
    def evaluate(self, sources: Sources) -> Outcome:
        raise RuntimeError("cannot read")


def test_a_rule_that_fails_is_logged_and_the_others_still_run(
    store: RegistryStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    report(store, clock.now, {"x0": True})
    rules = [BrokenRule("broken", "fraud"), DriftRule("works", "fraud")]

    changes = AlertEngine(rules, store, clock=clock).run_once()

    assert [c.alert.rule for c in changes] == ["works"]
    assert "alert rule broken could not be evaluated" in caplog.text
    assert "firing" in caplog.text  # the firing is logged too


BAD_RULES = [
    ({"kind": "dirft", "model": "m"}, "alert rule 'r': kind must be one of drift, accuracy"),
    ({"kind": "drift"}, "alert rule 'r': model is required"),
    ({"kind": "drift", "model": "m", "feature": "x"}, "unknown key 'feature' for a drift rule"),
    ({"kind": "drift", "model": "m", "features": [1]}, "features must be a list of non-empty"),
    ({"kind": "drift", "model": 5}, "alert rule 'r': model must be a non-empty string"),
    ({"kind": "accuracy", "model": "m", "metric": "f1"}, "give min, max or max_drop"),
    ({"kind": "accuracy", "model": "m", "min": 0.5}, "alert rule 'r': metric is required"),
    ({"kind": "error_rate", "max": 1.5}, "alert rule 'r': max must be between 0 and 1"),
    ({"kind": "error_rate", "max": "5%"}, "alert rule 'r': max must be a number, got '5%'"),
    ({"kind": "error_rate", "max": 0.1, "statuses": ["3xx"]}, "statuses must be 4xx and/or 5xx"),
    ({"kind": "error_rate", "max": 0.1, "window": "soon"}, "alert rule 'r': window: duration"),
    ({"kind": "error_rate", "max": 0.1, "window": "0s"}, "window must be longer than 0"),
    ({"kind": "p99_latency", "max_ms": -1}, "alert rule 'r': max_ms must be between 0 and"),
    ({"kind": "p99_latency", "max_ms": 9, "min_requests": -1}, "min_requests must be a whole"),
    ({"kind": "security_events", "window": "1h"}, "alert rule 'r': max is required"),
]


@pytest.mark.parametrize(("table", "message"), BAD_RULES)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_key(
    table: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match="^alert rule 'r': ") as raised:
        check_alerting(Settings(alerts={"r": table}, metrics=True))
    assert message in str(raised.value)


def test_rules_that_read_the_metrics_need_them_and_the_webhook_must_be_a_url() -> None:
    latency = {"slow": {"kind": "p99_latency", "max_ms": 100}}
    with pytest.raises(InvalidInput, match="'slow' reads the request metrics: turn on"):
        check_alerting(Settings(alerts=latency, metrics=False))
    with pytest.raises(InvalidInput, match="alert_webhook must be an http"):
        check_alerting(Settings(alert_webhook="ftp://example.com/hook"))
    assert [rule.name for rule in check_alerting(Settings(alerts=latency, metrics=True))] == [
        "slow"
    ]
