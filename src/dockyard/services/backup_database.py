"""The registry database in a backup: a consistent snapshot of it (SQLite's online backup API,
``pg_dump`` for PostgreSQL), loading it back, and the checks a backup and ``dockyard doctor``
make on it (its audit chain, the artifact each version is stored as).

``pg_dump``/``pg_restore`` get the password in their environment (``PGPASSWORD``), never on the
command line, where any user could read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Engine, inspect, make_url, select

from dockyard.errors import BackupInvalid, Conflict, DockyardError, Unavailable
from dockyard.registry.audit_chain import verify
from dockyard.registry.db import database_errors, open_engine, shown_url
from dockyard.registry.tables import models, versions

PG_TIMEOUT_S = 3600.0
"""Longest a ``pg_dump`` or ``pg_restore`` may run before it is stopped."""
SHOWN_ERROR_LINES = 5


@dataclass(frozen=True)
class StoredVersion:
    """A version and the artifact it is stored as."""

    model: str
    version: int
    digest: str


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``: how a registry at ``url`` is backed up."""
    return "postgresql" if make_url(url).get_backend_name() == "postgresql" else "sqlite"


def sqlite_snapshot(url: str, target: Path) -> None:
    """A consistent copy of the SQLite registry at ``url`` in ``target`` (one file, no WAL),
    taken while other processes read and write it."""
    source_path = make_url(url).database or ""
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise DockyardError(f"cannot back up registry database {source_path}: {exc}") from exc


def postgres_dump(url: str, target: Path) -> None:
    """``pg_dump`` of the PostgreSQL registry at ``url`` into ``target`` (custom format: one
    consistent snapshot, read by ``pg_restore``)."""
    _run_pg("pg_dump", url, ["--format=custom", "--no-owner", f"--file={target}"])


def postgres_load(url: str, dump: Path) -> None:
    """Load ``dump`` into the empty PostgreSQL database at ``url`` (Conflict when it is not)."""
    engine = open_engine_unmigrated(url)
    try:
        with database_errors(engine, "open"), engine.connect() as connection:
            tables = inspect(connection).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise Conflict(
            f"registry database {shown_url(url)} is not empty ({len(tables)} tables): restore "
            "into a new, empty database"
        )
    _run_pg("pg_restore", url, ["--no-owner", "--exit-on-error", "--single-transaction", str(dump)])


def postgres_check_dump(dump: Path) -> None:
    """That ``pg_restore`` can read ``dump``'s table of contents (BackupInvalid if not); nothing
    when ``pg_restore`` is not installed."""
    if shutil.which("pg_restore") is None:
        return
    try:
        subprocess.run(
            ["pg_restore", "--list", str(dump)],
            capture_output=True,
            check=True,
            timeout=PG_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        raise BackupInvalid(
            f"the backup's PostgreSQL dump is unreadable: {_last_lines(exc.stderr)}"
        ) from None


def open_engine_unmigrated(url: str) -> Engine:
    from sqlalchemy import create_engine

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed)


def _run_pg(tool: str, url: str, args: list[str]) -> None:
    if shutil.which(tool) is None:
        raise Unavailable(
            f"{tool} is not installed: install the PostgreSQL client tools (postgresql-client) "
            "to back up or restore a PostgreSQL registry"
        )
    parsed = make_url(url)
    env = {**os.environ}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    target = URL.create(
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    ).render_as_string()
    try:
        subprocess.run(
            [tool, f"--dbname={target}", *args],
            capture_output=True,
            check=True,
            env=env,
            timeout=PG_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        raise DockyardError(
            f"{tool} failed on {shown_url(url)}: {_last_lines(exc.stderr)}"
        ) from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{tool} on {shown_url(url)} took over {PG_TIMEOUT_S:.0f} s") from None


def _last_lines(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return "; ".join(lines[-SHOWN_ERROR_LINES:]) or "no message"


@contextlib.contextmanager
def opened(url: str) -> Iterator[Engine]:
    """The registry at ``url``, opened (and migrated) for checks, closed after."""
    engine = open_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def stored_versions(engine: Engine) -> list[StoredVersion]:
    """Every version, archived ones included, with its artifact's digest."""
    query = (
        select(models.c.name, versions.c.version, versions.c.artifact_digest)
        .join(models, models.c.id == versions.c.model_id)
        .order_by(models.c.name, versions.c.version)
    )
    with database_errors(engine), engine.connect() as connection:
        return [StoredVersion(str(n), int(v), str(d)) for n, v, d in connection.execute(query)]


def audit_problems(engine: Engine) -> list[str]:
    """The audit chain's breaks, one sentence each (none when it verifies)."""
    with database_errors(engine):
        return [f"audit entry {p.seq}: {p.kind}: {p.message}" for p in verify(engine)]
