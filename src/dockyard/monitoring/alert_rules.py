"""Alert rules: the ``[alerts.NAME]`` tables of ``dockyard.toml`` parsed into rules, and each
rule's evaluation to an ``Outcome`` (firing or not, a value and a message) against what it reads:
the latest drift report, the latest live evaluation, the request metrics over a window, the
security events over a window. ``monitoring.alerts`` keeps the alerts they raise."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Engine, func, select

from dockyard.errors import InvalidInput, NotFound
from dockyard.monitoring.metrics import LATENCY_BOUNDS_S, Snapshot
from dockyard.registry.db import database_errors
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import NAME_LENGTH, drift_reports, evaluations
from dockyard.registry.tables import security_events as security_events_table
from dockyard.security.keystore import parse_duration

DEFAULT_WINDOW = "5m"
DEFAULT_MIN_REQUESTS = 10
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "log_loss"})
"""Evaluation metrics for which a rise, not a fall, is the loss ``max_drop`` watches."""
STATUS_CLASSES = {"4xx": 4, "5xx": 5}


@dataclass(frozen=True)
class Traffic:
    """Cumulative request counts and latency histograms of a server's workers, as its metrics
    hold them; the error-rate and latency rules look at the difference over their window."""

    requests: Mapping[tuple[str, int], float] = field(default_factory=dict)
    """(model, HTTP status) → requests answered."""
    latency: Mapping[tuple[str, float], float] = field(default_factory=dict)
    """(model, bucket upper bound in seconds, ``inf`` last) → requests that took at most that."""

    def minus(self, earlier: Traffic) -> Traffic:
        """What happened since ``earlier``. A counter that went down was reset (its server
        restarted): its whole current value is new."""

        def less(now: Mapping[Any, float], then: Mapping[Any, float]) -> dict[Any, float]:
            return {
                key: value - then.get(key, 0.0) if value >= then.get(key, 0.0) else value
                for key, value in now.items()
            }

        return Traffic(less(self.requests, earlier.requests), less(self.latency, earlier.latency))

    def answered(self, model: str | None, classes: Iterable[int] = ()) -> float:
        """Requests for ``model`` (None: every model), only of these status classes if given."""
        wanted = set(classes)
        return sum(
            count
            for (name, status), count in self.requests.items()
            if (model is None or name == model) and (not wanted or status // 100 in wanted)
        )

    def latency_quantile(self, model: str | None, q: float) -> tuple[float, float] | None:
        """The ``q`` quantile of the latency in seconds, interpolated within its histogram bucket
        as Prometheus' ``histogram_quantile`` does, and the number of requests it is over; None
        without requests."""
        buckets: dict[float, float] = {}
        for (name, bound), count in self.latency.items():
            if model is None or name == model:
                buckets[bound] = buckets.get(bound, 0.0) + count
        bounds = sorted(buckets)
        if not bounds or buckets[bounds[-1]] <= 0:
            return None
        cumulative = [buckets[bound] for bound in bounds]
        total = cumulative[-1]
        rank = q * total
        index = bisect.bisect_left(cumulative, rank)
        upper = bounds[index]
        if math.isinf(upper):  # beyond the last finite bound: that bound is all that is known
            finite = [bound for bound in bounds if not math.isinf(bound)]
            return (finite[-1] if finite else 0.0), total
        lower = bounds[index - 1] if index > 0 else 0.0
        below = cumulative[index - 1] if index > 0 else 0.0
        within = cumulative[index] - below
        share = (rank - below) / within if within > 0 else 1.0
        return lower + (upper - lower) * share, total


def traffic_of(totals: Snapshot) -> Traffic:
    """The request counts and latency histograms of a server's summed metrics
    (``monitoring.metrics.read_totals``), by model and status: versions and routes added up."""
    requests: dict[tuple[str, int], float] = {}
    latency: dict[tuple[str, float], float] = {}
    bounds = (*LATENCY_BOUNDS_S, math.inf)
    for (model, _, _, status), stats in totals.requests.items():
        requests[model, status] = requests.get((model, status), 0.0) + stats[0]
        below = 0.0
        for bound, count in zip(bounds, stats[2:], strict=True):
            below += count
            latency[model, bound] = latency.get((model, bound), 0.0) + below
    return Traffic(requests, latency)


class TrafficHistory:
    """Snapshots of ``Traffic`` over time, so a rule can ask what changed over its window.

    It starts with no requests at ``start``: the counters of a server start at zero with it, and
    its scheduler with it, so requests answered before the first snapshot count too. (A
    monitoring process that takes the jobs over later, or a restarted one, counts everything since
    the server started in its first window.)
    """

    def __init__(self, keep: timedelta, start: datetime) -> None:
        self._keep = keep
        self._snapshots: deque[tuple[datetime, Traffic]] = deque([(start, Traffic())])

    def record(self, at: datetime, traffic: Traffic) -> None:
        self._snapshots.append((at, traffic))
        # Keep one snapshot at least as old as the longest window, to subtract from.
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= at - self._keep:
            self._snapshots.popleft()

    def since(self, moment: datetime) -> Traffic:
        """What happened since ``moment`` (or since the oldest snapshot, when none is that old):
        the newest snapshot minus the newest one taken at or before ``moment``."""
        base = self._snapshots[0][1]
        for at, traffic in self._snapshots:
            if at > moment:
                break
            base = traffic
        return self._snapshots[-1][1].minus(base)


@dataclass(frozen=True)
class Sources:
    """Everything a rule may read, at one evaluation."""

    engine: Engine
    store: RegistryStore
    now: datetime
    traffic: TrafficHistory | None = None


@dataclass(frozen=True)
class Outcome:
    """What one evaluation of a rule found: firing or not, the value it compared, and why."""

    firing: bool
    value: float | None
    message: str


class _Keys:
    """The keys of one ``[alerts.NAME]`` table, read with errors naming the rule and the key."""

    def __init__(self, where: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.table = table

    def fail(self, key: str, wanted: str) -> InvalidInput:
        return InvalidInput(f"{self.where}: {key} must be {wanted}, got {self.table[key]!r}")

    def text(self, key: str, *, required: bool = False) -> str | None:
        if key not in self.table:
            if required:
                raise InvalidInput(f"{self.where}: {key} is required")
            return None
        value = self.table[key]
        if not isinstance(value, str) or not value.strip() or len(value) > NAME_LENGTH:
            raise self.fail(key, f"a non-empty string of at most {NAME_LENGTH} characters")
        return value.strip()

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "a list of non-empty strings")
        return tuple(value)

    def number(
        self, key: str, *, low: float = 0.0, high: float = math.inf, required: bool = False
    ) -> float | None:
        if key not in self.table:
            if required:
                raise InvalidInput(f"{self.where}: {key} is required")
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number")
        if not low <= value <= high or math.isnan(value):
            raise self.fail(key, f"between {low:g} and {high:g}")
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, "a whole number, 0 or more")
        return value

    def window(self) -> timedelta:
        value = self.table.get("window", DEFAULT_WINDOW)
        if not isinstance(value, str):
            raise self.fail("window", "a duration such as 5m, 1h or 1d")
        try:
            window = parse_duration(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{self.where}: window: {exc}") from None
        if window <= timedelta(0):
            raise self.fail("window", "longer than 0 seconds")
        return window


def _shown(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Rule:
    """One ``[alerts.NAME]`` table; each kind says what it reads and when it fires."""

    kind: ClassVar[str]
    keys: ClassVar[frozenset[str]]

    name: str
    model: str | None

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> Rule:
        raise NotImplementedError

    def evaluate(self, sources: Sources) -> Outcome:
        raise NotImplementedError


@dataclass(frozen=True)
class DriftRule(Rule):
    """Fires while the model's latest drift report flags a feature (one of ``features``)."""

    kind = "drift"
    keys = frozenset({"model", "features", "version"})

    features: tuple[str, ...] = ()
    version: int | None = None

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> DriftRule:
        version = keys.table.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise keys.fail("version", "a version number")
        return cls(name, keys.text("model", required=True), keys.texts("features"), version)

    def evaluate(self, sources: Sources) -> Outcome:
        match = drift_reports.c.model == self.model
        if self.version is not None:
            match &= drift_reports.c.version == self.version
        latest = select(func.max(drift_reports.c.computed_at)).where(match).scalar_subquery()
        statement = (
            select(drift_reports)
            .where(match, drift_reports.c.computed_at == latest)
            .order_by(drift_reports.c.id)
        )
        with database_errors(sources.engine), sources.engine.connect() as connection:
            rows = connection.execute(statement).all()
        if not rows:
            return Outcome(False, None, f"no drift report for {self.model} yet")
        watched = [row for row in rows if not self.features or row.feature in self.features]
        drifted = [row for row in watched if row.drifted]
        versions = ", ".join(sorted({f"v{row.version}" for row in rows}))
        if not drifted:
            return Outcome(
                False,
                0.0,
                f"no drift in {self.model} {versions}: {len(watched)} features within thresholds",
            )
        shown = ", ".join(
            f"{row.feature} ({row.method} {row.score:.3g}"
            + (f", p={row.p_value:.2g}" if row.p_value is not None else "")
            + ")"
            for row in drifted
        )
        return Outcome(True, float(len(drifted)), f"drift in {self.model} {versions}: {shown}")


@dataclass(frozen=True)
class AccuracyRule(Rule):
    """Fires while the latest live evaluation of ``metric`` is below ``min``, above ``max``, or
    worse than the metric recorded at registration by more than ``max_drop``."""

    kind = "accuracy"
    keys = frozenset({"model", "metric", "min", "max", "max_drop", "min_rows"})

    metric: str = ""
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    min_rows: int = 1

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> AccuracyRule:
        bounds = {key: keys.number(key, low=-math.inf) for key in ("min", "max")}
        max_drop = keys.number("max_drop")
        if max_drop is None and all(bound is None for bound in bounds.values()):
            raise InvalidInput(f"{keys.where}: give min, max or max_drop")
        return cls(
            name,
            keys.text("model", required=True),
            str(keys.text("metric", required=True)),
            bounds["min"],
            bounds["max"],
            max_drop,
            keys.integer("min_rows", 1),
        )

    def evaluate(self, sources: Sources) -> Outcome:
        assert self.model is not None
        statement = (
            select(evaluations)
            .where(evaluations.c.model == self.model, evaluations.c.metric == self.metric)
            .order_by(evaluations.c.computed_at.desc(), evaluations.c.id.desc())
            .limit(1)
        )
        with database_errors(sources.engine), sources.engine.connect() as connection:
            row = connection.execute(statement).first()
        if row is None:
            return Outcome(False, None, f"no live {self.metric} of {self.model} yet")
        where = f"{self.metric} of {self.model} v{row.version} is {row.value:.4g}"
        if row.rows < self.min_rows:
            return Outcome(
                False, row.value, f"{where} on {row.rows} labelled rows (min_rows {self.min_rows})"
            )
        reasons = []
        if self.min is not None and row.value < self.min:
            reasons.append(f"below {self.min:g}")
        if self.max is not None and row.value > self.max:
            reasons.append(f"above {self.max:g}")
        if self.max_drop is not None:
            registered = _registered_metric(sources.store, self.model, row.version, self.metric)
            if registered is not None:
                loss = (
                    row.value - registered
                    if self.metric in LOWER_IS_BETTER
                    else (registered - row.value)
                )
                if loss > self.max_drop:
                    reasons.append(
                        f"{loss:.4g} worse than {registered:.4g} at registration "
                        f"(max_drop {self.max_drop:g})"
                    )
        detail = f" on {row.rows} labelled rows"
        if reasons:
            return Outcome(True, row.value, f"{where}{detail}: {'; '.join(reasons)}")
        return Outcome(False, row.value, f"{where}{detail}: within bounds")


def _registered_metric(store: RegistryStore, model: str, version: int, metric: str) -> float | None:
    try:
        value = store.get_version(model, version).metrics.get(metric)
    except NotFound:
        return None
    return None if value is None else float(value)


@dataclass(frozen=True)
class ErrorRateRule(Rule):
    """Fires while more than ``max`` (a share, 0 to 1) of the requests answered over ``window``
    had a status of the ``statuses`` classes (default 5xx), once there were ``min_requests``."""

    kind = "error_rate"
    keys = frozenset({"model", "max", "window", "statuses", "min_requests"})

    max: float = 0.0
    window: timedelta = timedelta(minutes=5)
    statuses: tuple[str, ...] = ("5xx",)
    min_requests: int = DEFAULT_MIN_REQUESTS

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> ErrorRateRule:
        statuses = keys.texts("statuses") or ("5xx",)
        unknown = [status for status in statuses if status not in STATUS_CLASSES]
        if unknown:
            raise InvalidInput(f"{keys.where}: statuses must be 4xx and/or 5xx, got {unknown[0]!r}")
        return cls(
            name,
            keys.text("model"),
            float(keys.number("max", high=1.0, required=True) or 0.0),
            keys.window(),
            tuple(statuses),
            keys.integer("min_requests", DEFAULT_MIN_REQUESTS),
        )

    def evaluate(self, sources: Sources) -> Outcome:
        traffic = _traffic(sources, self.window)
        scope = self.model or "all models"
        total = traffic.answered(self.model) if traffic else 0.0
        if traffic is None or total < max(1, self.min_requests):
            return Outcome(
                False,
                None,
                f"{total:.0f} requests to {scope} in the last {_shown(self.window)} "
                f"(min_requests {self.min_requests})",
            )
        failed = traffic.answered(self.model, (STATUS_CLASSES[s] for s in self.statuses))
        share = failed / total
        message = (
            f"{share:.1%} of {total:.0f} requests to {scope} in the last {_shown(self.window)} "
            f"answered {'/'.join(self.statuses)} (max {self.max:.1%})"
        )
        return Outcome(share > self.max, share, message)


@dataclass(frozen=True)
class LatencyRule(Rule):
    """Fires while the 99th percentile of the request latency over ``window`` is above
    ``max_ms`` (from the metrics' latency histogram), once there were ``min_requests``."""

    kind = "p99_latency"
    keys = frozenset({"model", "max_ms", "window", "min_requests"})

    max_ms: float = 0.0
    window: timedelta = timedelta(minutes=5)
    min_requests: int = DEFAULT_MIN_REQUESTS

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> LatencyRule:
        return cls(
            name,
            keys.text("model"),
            float(keys.number("max_ms", required=True) or 0.0),
            keys.window(),
            keys.integer("min_requests", DEFAULT_MIN_REQUESTS),
        )

    def evaluate(self, sources: Sources) -> Outcome:
        traffic = _traffic(sources, self.window)
        found = traffic.latency_quantile(self.model, 0.99) if traffic else None
        scope = self.model or "all models"
        total = found[1] if found else 0.0
        if found is None or total < max(1, self.min_requests):
            return Outcome(
                False,
                None,
                f"{total:.0f} requests to {scope} in the last {_shown(self.window)} "
                f"(min_requests {self.min_requests})",
            )
        p99_ms = found[0] * 1000
        message = (
            f"p99 latency of {scope} over the last {_shown(self.window)} is {p99_ms:.1f} ms "
            f"({total:.0f} requests; max {self.max_ms:g} ms)"
        )
        return Outcome(p99_ms > self.max_ms, p99_ms, message)


def _traffic(sources: Sources, window: timedelta) -> Traffic | None:
    return None if sources.traffic is None else sources.traffic.since(sources.now - window)


@dataclass(frozen=True)
class SecurityEventsRule(Rule):
    """Fires while more than ``max`` security events (of ``kinds``: auth_failed, forbidden,
    rate_limited, rate_anomaly; default all) were recorded over ``window``."""

    kind = "security_events"
    keys = frozenset({"kinds", "max", "window"})

    kinds: tuple[str, ...] = ()
    max: float = 0.0
    window: timedelta = timedelta(minutes=5)

    @classmethod
    def parse(cls, name: str, keys: _Keys) -> SecurityEventsRule:
        maximum = keys.number("max", required=True)
        return cls(name, None, keys.texts("kinds"), float(maximum or 0.0), keys.window())

    def evaluate(self, sources: Sources) -> Outcome:
        table = security_events_table
        statement = select(func.coalesce(func.sum(table.c["count"]), 0)).where(
            table.c.at >= sources.now - self.window
        )
        if self.kinds:
            statement = statement.where(table.c.kind.in_(self.kinds))
        with database_errors(sources.engine), sources.engine.connect() as connection:
            count = float(connection.execute(statement).scalar_one())
        kinds = "/".join(self.kinds) or "all"
        message = (
            f"{count:.0f} security events ({kinds}) in the last {_shown(self.window)} "
            f"(max {self.max:g})"
        )
        return Outcome(count > self.max, count, message)


TRAFFIC_RULES = (ErrorRateRule, LatencyRule)
RULE_KINDS: dict[str, type[Rule]] = {
    rule.kind: rule
    for rule in (DriftRule, AccuracyRule, ErrorRateRule, LatencyRule, SecurityEventsRule)
}


def parse_rule(name: str, table: Mapping[str, Any]) -> Rule:
    """One ``[alerts.NAME]`` table as a rule; InvalidInput names the rule and the key at fault."""
    where = f"alert rule {name!r}"
    if not name or len(name) > NAME_LENGTH:
        raise InvalidInput(f"{where}: a rule name has 1 to {NAME_LENGTH} characters")
    kind = table.get("kind")
    if kind not in RULE_KINDS:
        raise InvalidInput(f"{where}: kind must be one of {', '.join(RULE_KINDS)}, got {kind!r}")
    rule = RULE_KINDS[kind]
    for key in table:
        if key != "kind" and key not in rule.keys:
            raise InvalidInput(
                f"{where}: unknown key {key!r} for a {kind} rule; "
                f"use {', '.join(sorted(rule.keys))}"
            )
    return rule.parse(name, _Keys(where, table))
