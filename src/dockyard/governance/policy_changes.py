"""The ``[governance]`` policy's history in the audit trail: each process that opens a home records
the policy it runs under when it differs from the last one recorded, so the trail shows when the
rules changed and who ran the process that brought the change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from dockyard.config import Settings
from dockyard.registry.audit import AuditEntry, append, last_entry, lock_head
from dockyard.registry.db import database_errors, write_transaction
from dockyard.security.principals import Principal

POLICY_ACTION = "policy.change"
POLICY_TARGET = "governance"


def canonical_policy(table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` as plain JSON values (TOML dates as ISO text), as its audit entry holds it."""
    policy: dict[str, Any] = orjson.loads(orjson.dumps(dict(table)))
    return policy


def policy_digest(policy: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the policy's canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(dict(policy), option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_policy(engine: Engine, settings: Settings, actor: Principal) -> bool:
    """Append a ``policy.change`` entry (details: ``sha256`` and the ``policy`` table itself) as
    ``actor`` when ``settings.governance`` differs from the policy of the last such entry (none
    yet: the empty table, Dockyard's defaults); whether one was appended.

    The table is recorded as written, so it must hold no secret. Two processes starting with the
    same new policy record it once: the second finds it under the head lock."""
    policy = canonical_policy(settings.governance)
    digest = policy_digest(policy)
    with database_errors(engine), engine.connect() as connection:
        if _recorded_digest(connection) == digest:
            return False
    with database_errors(engine), write_transaction(engine) as connection:
        lock_head(connection)
        if _recorded_digest(connection) == digest:
            return False
        details = {"sha256": digest, "policy": policy}
        append(connection, AuditEntry(actor.actor, POLICY_ACTION, POLICY_TARGET, details=details))
    return True


def _recorded_digest(connection: Connection) -> str:
    last = last_entry(connection, POLICY_ACTION)
    return policy_digest({}) if last is None else str(last.details.get("sha256"))
