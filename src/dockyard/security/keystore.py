"""API keys in the registry database: create (the key is returned once), list, revoke, rotate.

Each state-changing call takes the principal acting and checks the permission table first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from dockyard.errors import InvalidInput, NotFound
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.refs import check_name
from dockyard.registry.store import utc_now
from dockyard.registry.tables import api_keys
from dockyard.security.apikeys import KeyHasher, KeyRecord, new_key
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, Role, require

DURATION = re.compile(r"^\s*(\d{1,15})\s*([smhdw])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_S = 100 * 365 * 86400
"""Past this a duration is a mistake (and past a few thousand years, a date overflow)."""
RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
RATE_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
RATE_SECONDS |= {"h": 3600, "hour": 3600}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` as a timedelta."""
    match = DURATION.match(text)
    if match is None:
        raise InvalidInput(f"duration {text!r} must look like 30s, 15m, 12h, 90d or 2w")
    seconds = int(match[1]) * SECONDS[match[2]]
    if seconds > MAX_DURATION_S:
        raise InvalidInput(f"duration {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """A moment given as a duration back from ``now`` (``30m``, ``1h``, ``7d``) or as an ISO 8601
    time (``2026-12-01``, ``2026-12-01T09:30:00+01:00``; one without an offset is UTC)."""
    if DURATION.match(text):
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"since {text!r} must be a duration such as 1h or 7d, or an ISO time such as "
            "2026-12-01T09:30:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_rate(text: str) -> float:
    """``100/s``, ``6000/min``, ``10000/hour`` as requests per second (positive)."""
    match = RATE.match(text)
    if match is None or float(match[1]) <= 0:
        raise InvalidInput(f"rate {text!r} must look like 100/s, 6000/min or 10000/hour")
    return float(match[1]) / RATE_SECONDS[match[2]]


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(
        self, engine: Engine, hasher: KeyHasher, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._engine = engine
        self._hasher = hasher
        self._clock = clock

    def create(
        self,
        actor: Principal,
        name: str,
        role: Role,
        models: Iterable[str] | None = None,
        expires_in: timedelta | None = None,
        rate: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which is not stored and never shown again."""
        require(actor, SERVICES["create_key"])
        check_name(name, "key name")
        scope = frozenset(models) if models else None
        for model in scope or ():
            check_name(model)
        if rate is not None:
            parse_rate(rate)
        key_id, key = new_key()
        now = self._clock()
        record = KeyRecord(
            key_id=key_id,
            name=name,
            role=role,
            models=scope,
            hash=self._hasher.digest(key),
            created_at=now,
            created_by=actor.actor,
            expires_at=now + expires_in if expires_in is not None else None,
            rate=rate,
        )
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            connection.execute(insert(api_keys).values(**_row_values(record)))
            append(connection, _entry(actor, "key.create", record), now)
        return record, key

    def all(self) -> list[KeyRecord]:
        """Every key, revoked and expired ones too, oldest first."""
        with database_errors(self._engine), self._engine.connect() as connection:
            rows = connection.execute(select(api_keys).order_by(api_keys.c.id)).all()
        return [_record(row) for row in rows]

    def active(self) -> list[KeyRecord]:
        now = self._clock()
        return [record for record in self.all() if record.state(now) == "active"]

    def find(self, key_id_or_name: str) -> KeyRecord:
        """The key with this id, else the one active key with this name."""
        records = self.all()
        for record in records:
            if record.key_id == key_id_or_name:
                return record
        now = self._clock()
        named = [r for r in records if r.name == key_id_or_name and r.state(now) == "active"]
        if len(named) == 1:
            return named[0]
        if named:
            ids = ", ".join(record.key_id for record in named)
            raise InvalidInput(
                f"{len(named)} active keys are named {key_id_or_name!r}: use an id ({ids})"
            )
        raise NotFound(f"no API key with id or active name {key_id_or_name!r}")

    def revoke(self, actor: Principal, key_id_or_name: str) -> KeyRecord:
        """Revoke a key now (servers refuse it within their refresh interval, about a second)."""
        require(actor, SERVICES["revoke_key"])
        record = self.find(key_id_or_name)
        if record.revoked_at is None:
            now = self._clock()
            with database_errors(self._engine), write_transaction(self._engine) as connection:
                _set(connection, record.key_id, revoked_at=now)
                append(connection, _entry(actor, "key.revoke", record), now)
        return self.find(record.key_id)

    def rotate(
        self, actor: Principal, key_id_or_name: str, grace: timedelta = timedelta(0)
    ) -> tuple[KeyRecord, str]:
        """A new key with the old one's name, role, scope, rate and lifetime; the old one expires
        after ``grace`` (0: at once), so clients can move over."""
        require(actor, SERVICES["rotate_key"])
        old = self.find(key_id_or_name)
        if old.state(self._clock()) != "active":
            raise InvalidInput(
                f"API key {old.key_id} is {old.state(self._clock())}: create a new one"
            )
        now = self._clock()
        lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
        key_id, key = new_key()
        record = dataclasses.replace(
            old,
            key_id=key_id,
            hash=self._hasher.digest(key),
            created_at=now,
            created_by=actor.actor,
            expires_at=now + lifetime if lifetime is not None else None,
            revoked_at=None,
        )
        ends = now + grace
        entry = _entry(
            actor, "key.rotate", record, replaces=old.key_id, grace_s=grace.total_seconds()
        )
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            connection.execute(insert(api_keys).values(**_row_values(record)))
            if old.expires_at is None or old.expires_at > ends:
                _set(connection, old.key_id, expires_at=ends)
            append(connection, entry, now)
        return record, key


def _set(connection: Connection, key_id: str, **values: Any) -> None:
    connection.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(**values))


def _entry(actor: Principal, action: str, record: KeyRecord, **extra: Any) -> AuditEntry:
    """The audit entry of a change to ``record``: what the key may do, never the key or its
    hash."""
    details = {
        "name": record.name,
        "role": record.role.value,
        "models": sorted(record.models) if record.models is not None else None,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "rate": record.rate,
        **extra,
    }
    return AuditEntry(actor.actor, action, f"key:{record.key_id}", details=details)


def _row_values(record: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "name": record.name,
        "role": record.role.value,
        "models": sorted(record.models) if record.models is not None else None,
        "hash": record.hash,
        "rate": record.rate,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
    }


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        role=Role(row.role),
        models=frozenset(row.models) if row.models is not None else None,
        hash=row.hash,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rate=row.rate,
    )
