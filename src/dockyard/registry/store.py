"""The registry's queries: models, their numbered versions and aliases, read and written as the
frozen records of ``dockyard.registry.records``.

Every write runs in one transaction that first locks the model's row (PostgreSQL) or the database
(SQLite), so concurrent writers to one model take turns instead of racing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, null, select, update
from sqlalchemy.exc import IntegrityError

from dockyard.errors import Conflict, InvalidInput, NotFound
from dockyard.registry.artifacts import check_digest
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, open_engine, write_transaction
from dockyard.registry.records import ArtifactRef, Lineage, Model, ModelVersion, Signature
from dockyard.registry.refs import DEFAULT_ALIAS, ModelRef, check_name
from dockyard.registry.tables import (
    NAME_LENGTH,
    SHORT_TEXT_LENGTH,
    aliases,
    model_tags,
    models,
    versions,
)

logger = logging.getLogger(__name__)

# Concurrent first registrations of one model race to insert its row; the losers retry.
CREATE_ATTEMPTS = 5
MAX_VERSION = 2**63 - 1
"""The largest version number a database integer holds; larger ones are asked for, never stored."""


def utc_now() -> datetime:
    """The default clock of the store: the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class RegistryStore:
    """Models, versions and aliases in the registry database; safe to share between threads."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        """Use a migrated engine (``open_engine`` migrates); ``clock`` stamps new rows."""
        self._engine = engine
        self._clock = clock

    @classmethod
    def open(cls, url: str) -> RegistryStore:
        """Open (creating and migrating as needed) the registry database at ``url``."""
        return cls(open_engine(url))

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def create_version(
        self,
        *,
        model: str,
        framework: str,
        artifact: ArtifactRef,
        signature: Signature,
        lineage: Lineage,
        allow_pickle: bool = False,
        trusted_types: Sequence[str] = (),
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        created_by: str = "",
        profile: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        personal_data: Mapping[str, Any] | None = None,
        audit: AuditEntry | None = None,
    ) -> ModelVersion:
        """Store a new version numbered one above the model's highest, creating the model if new.

        ``profile``: the reference profile (JSON), stored with the version; ``card`` and
        ``personal_data`` likewise. One transaction: ``audit`` is appended in it (its target the
        new version's ref when left empty); if that fails, nothing is stored. Safe under
        concurrent calls for the same model from threads or processes: each gets its own number.
        """
        check_name(model)
        check_digest(artifact.digest)
        _check_length("framework", framework, NAME_LENGTH)
        _check_length("artifact format", artifact.format, NAME_LENGTH)
        _check_length("created_by", created_by, SHORT_TEXT_LENGTH)
        draft = ModelVersion(
            model=model,
            version=0,
            framework=framework,
            artifact=ArtifactRef(
                artifact.digest, artifact.format, _json_value("artifact options", artifact.options)
            ),
            signature=signature,
            lineage=lineage,
            allow_pickle=allow_pickle,
            trusted_types=tuple(str(name) for name in trusted_types),
            metrics=_metrics(metrics or {}),
            params=_json_value("params", params or {}),
            tags=_string_map("tags", tags or {}),
            description=description,
            created_by=created_by,
            profile=None if profile is None else _json_value("profile", profile),
            card=None if card is None else _json_value("card", card),
            personal_data=(
                None if personal_data is None else _json_value("personal_data", personal_data)
            ),
        )
        with database_errors(self._engine):
            for attempt in range(1, CREATE_ATTEMPTS + 1):
                try:
                    return self._insert_version(draft, audit)
                except IntegrityError:
                    if attempt == CREATE_ATTEMPTS:
                        raise
                    logger.debug("registering %s collided with another; retrying", model)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def get_model(self, name: str) -> Model:
        with self._reading() as connection:
            row = _model_row(connection, name)
            return _models(connection, [row])[0]

    def list_models(self) -> list[Model]:
        """Every model, by name."""
        with self._reading() as connection:
            rows = connection.execute(select(models).order_by(models.c.name)).all()
            return _models(connection, rows)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, archived ones included, by number."""
        with self._reading() as connection:
            model = _model_row(connection, name)
            rows = connection.execute(
                select(versions).where(versions.c.model_id == model.id).order_by(versions.c.version)
            ).all()
            names = _alias_names_by_version(connection, model.id)
            return [_version(model.name, row, names.get(row.id, ())) for row in rows]

    def uses_artifact(self, digest: str) -> bool:
        """Whether any version, archived ones included, is stored as the artifact ``digest``."""
        with self._reading() as connection:
            found = connection.execute(
                select(versions.c.id).where(versions.c.artifact_digest == digest).limit(1)
            ).first()
            return found is not None

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self._reading() as connection:
            model = _model_row(connection, name)
            return _with_aliases(connection, model, _version_row(connection, model, version))

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version a reference names: ``name:3`` that version, ``name@alias`` the aliased one,
        a bare name the "production" alias if set, else the latest version not archived."""
        with self._reading() as connection:
            model = _model_row(connection, ref.name)
            if ref.version is not None:
                row = _version_row(connection, model, ref.version)
            elif ref.alias is not None:
                row = _aliased_row(connection, model, ref.alias)
            else:
                row = _default_row(connection, model)
            return _with_aliases(connection, model, row)

    def set_alias(
        self, name: str, alias: str, version: int, audit: AuditEntry | None = None
    ) -> ModelVersion:
        """Point ``alias`` at a version, moving it if it exists; an archived version is refused."""
        check_name(alias, "alias")
        with self._writing(audit) as connection:
            return point_alias(connection, name, alias, version)

    def delete_alias(self, name: str, alias: str, audit: AuditEntry | None = None) -> None:
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            deleted = connection.execute(
                delete(aliases).where(aliases.c.model_id == model.id, aliases.c.name == alias)
            )
            if deleted.rowcount == 0:
                raise _no_alias(connection, model, alias)

    def archive(self, name: str, version: int, audit: AuditEntry | None = None) -> ModelVersion:
        """Mark a version archived (kept, but never served by default); refused while an alias
        points at it. Archiving an archived version changes nothing."""
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            row = _version_row(connection, model, version)
            pointing = _alias_names_by_version(connection, model.id).get(row.id, ())
            if pointing:
                listed = ", ".join(repr(alias) for alias in pointing)
                raise Conflict(
                    f"cannot archive {name}:{version}: alias {listed} points at it; "
                    "move or delete the alias first"
                )
            connection.execute(
                update(versions).where(versions.c.id == row.id).values(archived=True)
            )
            return _version(model.name, _version_row(connection, model, version), ())

    def unarchive(self, name: str, version: int, audit: AuditEntry | None = None) -> ModelVersion:
        """Make an archived version live again: a bare model name may resolve to it and aliases
        may point at it. Unarchiving a version that is not archived changes nothing."""
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            row = _version_row(connection, model, version)
            if row.archived:
                connection.execute(
                    update(versions).where(versions.c.id == row.id).values(archived=False)
                )
                row = _version_row(connection, model, version)
            return _with_aliases(connection, model, row)

    def set_model_description(
        self, name: str, description: str, audit: AuditEntry | None = None
    ) -> Model:
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            connection.execute(
                update(models).where(models.c.id == model.id).values(description=description)
            )
            return _models(connection, [_model_row(connection, name)])[0]

    def set_model_tags(
        self, name: str, tags: Mapping[str, str], audit: AuditEntry | None = None
    ) -> Model:
        """Replace the model's tags with ``tags``."""
        checked = _string_map("tags", tags)
        for key in checked:
            if not key or len(key) > NAME_LENGTH:
                raise InvalidInput(f"invalid tag key {key!r}: use 1-{NAME_LENGTH} characters")
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            connection.execute(delete(model_tags).where(model_tags.c.model_id == model.id))
            if checked:
                connection.execute(
                    insert(model_tags),
                    [{"model_id": model.id, "key": k, "value": v} for k, v in checked.items()],
                )
            return _models(connection, [model])[0]

    def _insert_version(self, draft: ModelVersion, audit: AuditEntry | None) -> ModelVersion:
        with write_transaction(self._engine) as connection:
            now = self._clock().astimezone(UTC)
            model_id = connection.execute(
                select(models.c.id).where(models.c.name == draft.model).with_for_update()
            ).scalar_one_or_none()
            if model_id is None:
                model_id = connection.execute(
                    insert(models)
                    .values(name=draft.model, description="", created_at=now)
                    .returning(models.c.id)
                ).scalar_one()
            highest = connection.execute(
                select(func.max(versions.c.version)).where(versions.c.model_id == model_id)
            ).scalar_one_or_none()
            number = (highest or 0) + 1
            connection.execute(
                insert(versions).values(model_id=model_id, **_version_values(draft, number, now))
            )
            version = dataclasses.replace(draft, version=number, created_at=now)
            if audit is not None:
                append(
                    connection,
                    dataclasses.replace(audit, target=audit.target or version.ref),
                    now,
                )
        return version

    def set_card(
        self,
        name: str,
        version: int,
        card: Mapping[str, Any] | None,
        audit: AuditEntry | None = None,
    ) -> ModelVersion:
        """Replace a version's model card (None: remove it); archived versions too, since a card
        documents a version whatever is served. ``audit`` is appended in the same transaction."""
        stored = null() if card is None else _json_value("card", card)
        with self._writing(audit) as connection:
            model = _locked_model_row(connection, name)
            row = _version_row(connection, model, version)
            connection.execute(update(versions).where(versions.c.id == row.id).values(card=stored))
            return _with_aliases(connection, model, _version_row(connection, model, version))

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with database_errors(self._engine), self._engine.connect() as connection:
            yield connection

    @contextmanager
    def _writing(self, audit: AuditEntry | None = None) -> Iterator[Connection]:
        """A write transaction; ``audit`` is appended in it once the change succeeded (a change
        that raises rolls back without its entry)."""
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            yield connection
            if audit is not None:
                append(connection, audit, self._clock())


def point_alias(connection: Connection, name: str, alias: str, version: int) -> ModelVersion:
    """Point ``alias`` at a version in ``connection``'s write transaction (the model's row locked
    until it ends), moving it if it exists; an archived version is refused (Conflict). The
    version as it is now. What ``RegistryStore.set_alias`` does, for a caller whose own change
    must commit with the move (an approved promotion)."""
    check_name(alias, "alias")
    model = _locked_model_row(connection, name)
    row = _version_row(connection, model, version)
    if row.archived:
        raise Conflict(
            f"cannot point alias {alias!r} at {name}:{version}: that version is archived"
        )
    alias_id = connection.execute(
        select(aliases.c.id).where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).scalar_one_or_none()
    if alias_id is None:
        connection.execute(insert(aliases).values(model_id=model.id, name=alias, version_id=row.id))
    else:
        connection.execute(
            update(aliases).where(aliases.c.id == alias_id).values(version_id=row.id)
        )
    return _with_aliases(connection, model, row)


def lock_model(connection: Connection, name: str) -> None:
    """Lock the model's row until ``connection``'s transaction ends, as every write to the model
    does (writers to one model take turns); NotFound for a model that is not registered."""
    _locked_model_row(connection, name)


def _model_row(connection: Connection, name: str) -> Row[Any]:
    row = connection.execute(select(models).where(models.c.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"model {name!r} is not registered")
    return row


def _locked_model_row(connection: Connection, name: str) -> Row[Any]:
    """The model's row, locked until the commit so writers to one model take turns."""
    row = connection.execute(
        select(models).where(models.c.name == name).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound(f"model {name!r} is not registered")
    return row


def _version_row(connection: Connection, model: Row[Any], number: int) -> Row[Any]:
    if not 0 < number <= MAX_VERSION:
        raise NotFound(f"model {model.name!r} has no version {number}: versions count from 1")
    row = connection.execute(
        select(versions).where(versions.c.model_id == model.id, versions.c.version == number)
    ).one_or_none()
    if row is not None:
        return row
    highest = connection.execute(
        select(func.max(versions.c.version)).where(versions.c.model_id == model.id)
    ).scalar_one_or_none()
    known = f"its versions are 1 to {highest}" if highest else "it has no versions"
    raise NotFound(f"model {model.name!r} has no version {number}; {known}")


def _aliased_row(connection: Connection, model: Row[Any], alias: str) -> Row[Any]:
    row = connection.execute(
        select(versions)
        .join(aliases, aliases.c.version_id == versions.c.id)
        .where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).one_or_none()
    if row is None:
        raise _no_alias(connection, model, alias)
    return row


def _default_row(connection: Connection, model: Row[Any]) -> Row[Any]:
    """The version a bare model name means: its production alias, else its latest live version."""
    aliased = connection.execute(
        select(versions)
        .join(aliases, aliases.c.version_id == versions.c.id)
        .where(aliases.c.model_id == model.id, aliases.c.name == DEFAULT_ALIAS)
    ).one_or_none()
    if aliased is not None:
        return aliased
    latest = connection.execute(
        select(versions)
        .where(versions.c.model_id == model.id, versions.c.archived.is_(False))
        .order_by(versions.c.version.desc())
        .limit(1)
    ).one_or_none()
    if latest is None:
        raise NotFound(
            f"model {model.name!r} has no version to serve: no {DEFAULT_ALIAS!r} alias and no "
            "version that is not archived; name a version explicitly (e.g. "
            f"{model.name}:1)"
        )
    return latest


def _no_alias(connection: Connection, model: Row[Any], alias: str) -> NotFound:
    names = sorted(_aliases_of(connection, [model.id]).get(model.id, {}))
    known = f"its aliases: {', '.join(names)}" if names else "it has no aliases"
    return NotFound(f"model {model.name!r} has no alias {alias!r}; {known}")


def _alias_names_by_version(connection: Connection, model_id: int) -> dict[int, tuple[str, ...]]:
    rows = connection.execute(
        select(aliases.c.version_id, aliases.c.name)
        .where(aliases.c.model_id == model_id)
        .order_by(aliases.c.name)
    ).all()
    names: dict[int, tuple[str, ...]] = {}
    for version_id, name in rows:
        names[version_id] = (*names.get(version_id, ()), name)
    return names


def _aliases_of(connection: Connection, model_ids: list[int]) -> dict[int, dict[str, int]]:
    """For each model id: alias name -> version number."""
    rows = connection.execute(
        select(aliases.c.model_id, aliases.c.name, versions.c.version)
        .join(versions, aliases.c.version_id == versions.c.id)
        .where(aliases.c.model_id.in_(model_ids))
        .order_by(aliases.c.name)
    ).all()
    result: dict[int, dict[str, int]] = {}
    for model_id, name, number in rows:
        result.setdefault(model_id, {})[name] = number
    return result


def _models(connection: Connection, rows: Sequence[Row[Any]]) -> list[Model]:
    ids = [row.id for row in rows]
    latest: dict[int, int] = {
        model_id: highest
        for model_id, highest in connection.execute(
            select(versions.c.model_id, func.max(versions.c.version))
            .where(versions.c.model_id.in_(ids))
            .group_by(versions.c.model_id)
        )
    }
    alias_map = _aliases_of(connection, ids)
    tags: dict[int, dict[str, str]] = {}
    for model_id, key, value in connection.execute(
        select(model_tags.c.model_id, model_tags.c.key, model_tags.c.value)
        .where(model_tags.c.model_id.in_(ids))
        .order_by(model_tags.c.key)
    ):
        tags.setdefault(model_id, {})[key] = value
    return [
        Model(
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            latest_version=latest.get(row.id),
            aliases=alias_map.get(row.id, {}),
            tags=tags.get(row.id, {}),
        )
        for row in rows
    ]


def _with_aliases(connection: Connection, model: Row[Any], row: Row[Any]) -> ModelVersion:
    return _version(model.name, row, _alias_names_by_version(connection, model.id).get(row.id, ()))


def _version(model_name: str, row: Row[Any], alias_names: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        model=model_name,
        version=row.version,
        framework=row.framework,
        artifact=ArtifactRef(row.artifact_digest, row.artifact_format, row.artifact_options),
        signature=Signature.from_dict(row.signature),
        lineage=Lineage.from_dict(row.lineage),
        allow_pickle=row.allow_pickle,
        trusted_types=tuple(row.trusted_types),
        metrics=row.metrics,
        params=row.params,
        tags=row.tags,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        archived=row.archived,
        aliases=alias_names,
        profile=row.profile,
        card=row.card,
        personal_data=row.personal_data,
    )


def _version_values(version: ModelVersion, number: int, now: datetime) -> dict[str, Any]:
    return {
        "version": number,
        "framework": version.framework,
        "artifact_digest": version.artifact.digest,
        "artifact_format": version.artifact.format,
        "artifact_options": dict(version.artifact.options),
        "signature": version.signature.to_dict(),
        "lineage": version.lineage.to_dict(),
        "allow_pickle": version.allow_pickle,
        "trusted_types": list(version.trusted_types),
        "metrics": dict(version.metrics),
        "params": dict(version.params),
        "tags": dict(version.tags),
        "description": version.description,
        "created_by": version.created_by,
        "created_at": now,
        "archived": False,
        # SQL NULL, not the JSON value null, for a version without a profile.
        "profile": null() if version.profile is None else dict(version.profile),
        "card": null() if version.card is None else dict(version.card),
        "personal_data": null() if version.personal_data is None else dict(version.personal_data),
    }


def _json_value(field: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as it will read back from the database; InvalidInput when it is not JSON."""
    try:
        loaded = json.loads(json.dumps(dict(value), allow_nan=False, default=_plain))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} must be JSON (strings, numbers, lists, maps): {exc}") from exc
    result: dict[str, Any] = loaded
    return result


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters long; the limit is {limit}")


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays (common in params) as plain Python values; anything else fails."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidInput(f"metric {name!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidInput(f"metric {name!r} must be finite, got {value!r}")
        result[str(name)] = float(value)
    return result


def _string_map(field: str, values: Mapping[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput(f"{field} must map strings to strings; got {key!r}: {value!r}")
    return dict(values)
