"""The registry's schema as SQLAlchemy Core tables; the migrations create exactly these.

Timestamps go through ``UTCDateTime``: stored in UTC on every backend (SQLite keeps no offset) and
read back as timezone-aware ``datetime`` values in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

NAME_LENGTH = 128
DIGEST_LENGTH = 64
SHORT_TEXT_LENGTH = 256

# Deterministic constraint names, so later migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC; a naive ``datetime`` is refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing to store a naive datetime {value!r}; give it a timezone")
        value = value.astimezone(UTC)
        # SQLite's DATETIME keeps no offset: store the UTC wall time and re-attach UTC on read.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def python_type(self) -> type[Any]:
        return datetime


metadata = MetaData(naming_convention=NAMING_CONVENTION)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("framework", String(NAME_LENGTH), nullable=False),
    Column("artifact_digest", String(DIGEST_LENGTH), nullable=False),
    Column("artifact_format", String(NAME_LENGTH), nullable=False),
    Column("artifact_options", JSON, nullable=False),
    Column("signature", JSON, nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("allow_pickle", Boolean, nullable=False),
    Column("trusted_types", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_by", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("archived", Boolean, nullable=False, server_default=false()),
    Column("profile", JSON, nullable=True),
    Column("card", JSON, nullable=True),
    Column("personal_data", JSON, nullable=True),
    UniqueConstraint("model_id", "version", name="uq_versions_model_id_version"),
    # Garbage collection asks which digests are still referenced.
    Index("ix_versions_artifact_digest", "artifact_digest"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    UniqueConstraint("model_id", "name", name="uq_aliases_model_id_name"),
)

model_tags = Table(
    "model_tags",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("key", String(NAME_LENGTH), primary_key=True),
    Column("value", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_id", String(NAME_LENGTH), nullable=False),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("role", String(NAME_LENGTH), nullable=False),
    Column("models", JSON, nullable=True),
    Column("hash", String(DIGEST_LENGTH), nullable=False),
    Column("rate", String(NAME_LENGTH), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    UniqueConstraint("key_id"),
)
"""API keys: only a keyed hash of each key is stored; ``models`` NULL means every model."""

security_events = Table(
    "security_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(NAME_LENGTH), nullable=False),
    Column("principal", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("key_id", String(NAME_LENGTH), nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("client", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("detail", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Index("ix_security_events_at", "at"),
)
"""Auth failures, refusals, rate-limit hits and unusual request rates, newest last."""

version_signatures = Table(
    "version_signatures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    Column("signing_key_id", String(NAME_LENGTH), nullable=False),
    Column("signature", Text, nullable=False),
    Column("signed_at", UTCDateTime, nullable=False),
    Column("signed_by", String(SHORT_TEXT_LENGTH), nullable=False),
    UniqueConstraint("version_id", "signing_key_id", name="uq_version_signatures_version_key"),
)
"""Ed25519 signatures over a version's artifact digest and identity, one per signing key."""


drift_reports = Table(
    "drift_reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("window", String(NAME_LENGTH), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("feature", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("method", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("p_value", Float, nullable=True),
    Column("drifted", Boolean, nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_drift_reports_model_at", "model", "computed_at"),
)
"""One row per feature (or output, ``output.<name>``) per drift computation: the score of its
method (psi, ks, chi2), the p-value where the method has one, and data-quality details."""

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("window", String(NAME_LENGTH), nullable=False),
    Column("metric", String(NAME_LENGTH), nullable=False),
    Column("value", Float, nullable=False),
    Column("rows", Integer, nullable=False),
    Index("ix_evaluations_model_at", "model", "computed_at"),
)
"""Metrics of a version on its labelled live traffic (accuracy, f1, auc, mae, rmse, ...)."""

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rule", String(NAME_LENGTH), nullable=False),
    Column("model", String(NAME_LENGTH), nullable=True),
    Column("state", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("message", Text, nullable=False),
    Column("fired_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    Index("ix_alerts_state", "state"),
)
"""Alerts: one row per firing of a rule (``open`` until its condition clears, then
``resolved``)."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("action", String(NAME_LENGTH), nullable=False),
    Column("target", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("model", String(NAME_LENGTH), nullable=True),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(DIGEST_LENGTH), nullable=False),
    Column("hash", String(DIGEST_LENGTH), nullable=False),
    Index("ix_audit_log_model", "model"),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_action_seq", "action", "seq"),
)
"""The audit trail: one entry per state change, appended in the change's transaction; ``hash`` is
the SHA-256 of the entry and ``prev_hash``, the previous entry's ``hash`` (``registry.audit``)."""

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(DIGEST_LENGTH), nullable=False),
)
"""One row (id 1): the last entry's number and hash. Every append updates it first, which locks
it (a row lock on PostgreSQL, the write lock on SQLite), so concurrent writers queue and the chain
never forks; it also shows a deleted last entry."""

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("alias", String(NAME_LENGTH), nullable=False),
    Column("state", String(16), nullable=False),
    Column("requested_by", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("comment", Text, nullable=False),
    Column("gates", JSON, nullable=False),
    Column("decided_by", String(SHORT_TEXT_LENGTH), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decision_comment", Text, nullable=True),
    Index("ix_promotions_model_state", "model", "state"),
)
"""Requests to move a protected alias (four eyes): ``pending`` until an approver other than the
registrant and the requester approves (the alias moves) or rejects it."""

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("alias", String(NAME_LENGTH), nullable=False),
    Column("stable", Integer, nullable=False),
    Column("candidate", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("percent", Integer, nullable=False),
    Column("sticky", String(NAME_LENGTH), nullable=True),
    Column("state", String(16), nullable=False),
    Column("started_by", String(SHORT_TEXT_LENGTH), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_by", String(SHORT_TEXT_LENGTH), nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_rollouts_model_state", "model", "state"),
)
"""Rollouts of a candidate version beside the stable one that ``alias`` pointed at: ``canary``
(``percent`` of the requests) or ``shadow`` (every request mirrored, never answered); ``active``
until promoted, aborted or rolled back (``reason`` says why it ended)."""
