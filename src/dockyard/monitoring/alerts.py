"""Alerts: the rules of ``monitoring.alert_rules`` evaluated into the ``alerts`` table — one
open alert per firing rule (deduplicated: a rule that keeps firing updates its value and
``last_seen_at``), resolved when its condition clears — and each firing and resolution announced
in the log and to the webhook.

The table is the state, so whichever process holds the home's scheduler lock
(``monitoring.scheduler``) carries on where the previous holder stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, insert, select, update

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.monitoring.alert_rules import (
    TRAFFIC_RULES,
    Outcome,
    Rule,
    Sources,
    Traffic,
    TrafficHistory,
    parse_rule,
)
from dockyard.monitoring.webhook import Webhook
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.store import RegistryStore, utc_now
from dockyard.registry.tables import alerts

logger = logging.getLogger("dockyard.alerts")

OPEN = "open"
RESOLVED = "resolved"
FIRING = "firing"
RETIRED = "retired"
"""The kind announced for an open alert whose rule is no longer configured."""
LIST_LIMIT = 10_000


def check_alerting(settings: Settings) -> list[Rule]:
    """The rules of ``settings.alerts``, checked with the webhook setting and what the rules
    need, so that ``dockyard serve`` refuses a mistake before it starts any worker."""
    rules = [parse_rule(name, table) for name, table in settings.alerts.items()]
    needing = [rule.name for rule in rules if isinstance(rule, TRAFFIC_RULES)]
    if needing and not settings.metrics:
        raise InvalidInput(
            f"alert rule {needing[0]!r} reads the request metrics: turn on the metrics setting"
        )
    if settings.alert_webhook:
        parts = urlsplit(settings.alert_webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"alert_webhook must be an http:// or https:// URL, got {settings.alert_webhook!r}"
            )
    return rules


@dataclass(frozen=True)
class Alert:
    """One row of the ``alerts`` table: a rule that fired, open until its condition cleared."""

    id: int
    rule: str
    model: str | None
    state: str
    value: float | None
    message: str
    fired_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "model": self.model,
            "state": self.state,
            "value": self.value,
            "message": self.message,
            "fired_at": self.fired_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


def list_alerts(engine: Engine, *, everything: bool = False, limit: int = 1000) -> list[Alert]:
    """The open alerts (``everything``: resolved ones too, at most ``limit``), newest first."""
    if not 1 <= limit <= LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {LIST_LIMIT}")
    statement = select(alerts).order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit)
    if not everything:
        statement = statement.where(alerts.c.state == OPEN)
    with database_errors(engine), engine.connect() as connection:
        return [Alert(**row._asdict()) for row in connection.execute(statement)]


@dataclass(frozen=True)
class Change:
    """An alert that fired or resolved at this evaluation: what is announced."""

    state: str
    """``firing`` or ``resolved``."""
    alert: Alert
    kind: str
    value: float | None
    message: str

    def payload(self, now: datetime) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {
            "alert": self.alert.rule,
            "kind": self.kind,
            "state": self.state,
            "model": self.alert.model,
            "value": self.value,
            "message": self.message,
            "id": self.alert.id,
            "fired_at": self.alert.fired_at.isoformat(),
            "resolved_at": self.alert.resolved_at.isoformat() if self.alert.resolved_at else None,
            "sent_at": now.isoformat(),
        }


class AlertEngine:
    """Evaluates the rules and keeps the ``alerts`` table in step: one open alert per firing rule,
    resolved when it stops firing (or its rule is removed from the configuration)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        store: RegistryStore,
        webhook: Webhook | None = None,
        traffic: Callable[[], Traffic] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.rules = list(rules)
        self._store = store
        self._webhook = webhook
        self._traffic = traffic
        self._clock = clock
        windows = [rule.window for rule in self.rules if isinstance(rule, TRAFFIC_RULES)]
        self._history = TrafficHistory(max(windows, default=timedelta(0)), clock())

    def run_once(self) -> list[Change]:
        """Evaluate every rule once; the alerts that fired or resolved. A rule whose evaluation
        fails is logged and left as it was; the others still run."""
        now = self._clock()
        if self._traffic is not None:
            self._history.record(now, self._traffic())
        sources = Sources(
            self._store.engine,
            self._store,
            now,
            self._history if self._traffic is not None else None,
        )
        changes = []
        for rule in self.rules:
            try:
                outcome = rule.evaluate(sources)
                change = self._settle(rule, outcome, now)
            except Exception:
                logger.exception("alert rule %s could not be evaluated", rule.name)
                continue
            if change is not None:
                changes.append(change)
        changes += self._retire(now)
        for change in changes:
            self._announce(change, now)
        return changes

    def _settle(self, rule: Rule, outcome: Outcome, now: datetime) -> Change | None:
        """Bring ``rule``'s open alert in step with ``outcome``, in one transaction."""
        engine = self._store.engine
        with database_errors(engine), write_transaction(engine) as connection:
            found = connection.execute(
                select(alerts).where(alerts.c.rule == rule.name, alerts.c.state == OPEN)
            ).first()
            if found is not None:
                alert = Alert(**found._asdict())
                if not outcome.firing:
                    return _resolve(connection, alert, rule.kind, outcome, now)
                connection.execute(
                    update(alerts)
                    .where(alerts.c.id == alert.id)
                    .values(value=outcome.value, message=outcome.message, last_seen_at=now)
                )
                return None
            if not outcome.firing:
                return None
            fired = Alert(
                0, rule.name, rule.model, OPEN, outcome.value, outcome.message, now, now, None
            )
            values = {k: v for k, v in dataclasses.asdict(fired).items() if k != "id"}
            key = connection.execute(insert(alerts).values(values)).inserted_primary_key
            assert key is not None
            alert = dataclasses.replace(fired, id=int(key[0]))
            return Change(FIRING, alert, rule.kind, outcome.value, outcome.message)

    def _retire(self, now: datetime) -> list[Change]:
        """Resolve the open alerts of rules no longer configured."""
        names = [rule.name for rule in self.rules]
        engine = self._store.engine
        with database_errors(engine), write_transaction(engine) as connection:
            rows = connection.execute(
                select(alerts).where(alerts.c.state == OPEN, alerts.c.rule.not_in(names))
            ).all()
            return [
                _resolve(
                    connection,
                    Alert(**row._asdict()),
                    RETIRED,
                    Outcome(False, None, f"rule {row.rule} is no longer configured"),
                    now,
                )
                for row in rows
            ]

    def _announce(self, change: Change, now: datetime) -> None:
        alert = change.alert
        logger.warning(
            "alert %s %s (%s): %s", alert.rule, change.state, change.kind, change.message
        )
        if self._webhook is not None:
            self._webhook.send(change.payload(now))


def _resolve(
    connection: Connection, alert: Alert, kind: str, outcome: Outcome, now: datetime
) -> Change:
    """Mark ``alert`` resolved; it keeps the value and message it last fired with."""
    connection.execute(
        update(alerts).where(alerts.c.id == alert.id).values(state=RESOLVED, resolved_at=now)
    )
    resolved = dataclasses.replace(alert, state=RESOLVED, resolved_at=now)
    return Change(RESOLVED, resolved, kind, outcome.value, outcome.message)
