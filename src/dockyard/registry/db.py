"""Opening the registry database: per-backend engine settings, migrations to head on open, and the
one place where SQLAlchemy's errors become Dockyard's.

SQLite gets WAL, a busy timeout and foreign keys on every connection, and SQLAlchemy (not the
``sqlite3`` module) emits BEGIN, so that DDL is transactional and a writer can take the write lock
up front (``BEGIN IMMEDIATE``) instead of failing to upgrade a read lock under contention.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidInput,
    MissingExtra,
    StorageFull,
    Unavailable,
)
from dockyard.home import DIR_MODE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
HEAD_REVISION = "0005"
PG_DISK_FULL = "53100"
"""PostgreSQL's SQLSTATE for a write refused for want of disk space."""
"""The newest revision in ``migrations/versions``: a database already there is opened without
importing Alembic (a fifth of a second of every command). Raise it with each new migration;
``tests/registry/test_migration_head.py`` checks it against Alembic's own head."""
VERSION_TABLE = "alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 5000
WAL_RETRY_S = 0.01
# Execution option read by the SQLite "begin" listener: this transaction will write.
WRITE_OPTION = "dockyard_write"
# Key of the PostgreSQL advisory lock that serialises concurrent upgrades ("dockyard" in ASCII).
MIGRATION_LOCK_KEY = 0x646F636B79617264
POSTGRES_DRIVER = "postgresql+psycopg"
POSTGRES_CONNECT_TIMEOUT_S = 10
# Alembic keeps its running context in module globals: one upgrade at a time per process.
_ALEMBIC_LOCK = threading.Lock()


def open_engine(url: str) -> Engine:
    """Open the registry database at ``url`` and bring its schema to the latest revision.

    ``url`` is a SQLAlchemy URL: ``sqlite:///PATH`` (the parent folder is created) or
    ``postgresql+psycopg://USER:PASSWORD@HOST/DB`` (plain ``postgresql://`` means psycopg too).
    Safe to call from several processes at once on a new database: one upgrades, the others wait
    and find the schema in place. Raises DockyardError naming the database (password masked) and
    the cause when it cannot be opened, MissingExtra when the PostgreSQL driver is not installed.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(_sqlite_file(parsed))
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername=POSTGRES_DRIVER)
        if parsed.drivername == POSTGRES_DRIVER and importlib.util.find_spec("psycopg") is None:
            raise MissingExtra("PostgreSQL driver", "postgres")
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        try:
            engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        except ImportError as exc:
            raise MissingExtra("PostgreSQL driver", "postgres") from exc
    else:
        raise InvalidInput(
            f"unsupported registry database {shown_url(parsed)}: use sqlite:///PATH "
            "or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        )
    try:
        with database_errors(engine, "open"):
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN (waiting up to the
    busy timeout), so a read-then-write cannot fail on a lock upgrade. Commits on normal exit."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


@contextmanager
def database_errors(engine: Engine, doing: str = "use") -> Iterator[None]:
    """Turn SQLAlchemy's errors into Dockyard's, naming the database (password masked).

    IntegrityError becomes Conflict. The database's own troubles become "cannot {doing} registry
    database URL: cause": Unavailable when it cannot be reached or used now (cannot connect,
    locked, connection lost), else a DockyardError (not a database file). Errors in Dockyard's
    own SQL (ProgrammingError, DataError, ...) are bugs, not the user's to fix, and pass through
    unchanged.
    """
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(
            f"registry database {shown_url(engine.url)} refused the change: {error_cause(exc)}"
        ) from exc
    except (ProgrammingError, DataError, InternalError, NotSupportedError):
        raise
    except (OperationalError, InterfaceError) as exc:
        if _disk_full(exc):
            raise StorageFull(
                f"cannot {doing} registry database {shown_url(engine.url)}: its disk is full; "
                "free some space and try again"
            ) from exc
        # Cannot connect, connection lost, locked: the database is unavailable (exit 7, 503).
        raise Unavailable(
            f"cannot {doing} registry database {shown_url(engine.url)}: {error_cause(exc)}"
        ) from exc
    except DatabaseError as exc:
        raise DockyardError(
            f"cannot {doing} registry database {shown_url(engine.url)}: {error_cause(exc)}"
        ) from exc


def _disk_full(error: DBAPIError) -> bool:
    """Whether the database refused a write for want of space (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full)."""
    cause = error.orig
    return (
        getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(cause, "sqlstate", None) == PG_DISK_FULL
    )


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision; a read-only check when it is already there.

    The upgrade runs in one transaction that holds the database's write lock (SQLite) or an
    advisory lock (PostgreSQL), so concurrent callers serialise and later ones find it done.
    """
    with engine.connect() as connection:
        if _stamped_revisions(connection) == [HEAD_REVISION]:
            return
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    head = _scripts().get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return
    if current is not None and current not in _known_revisions():
        raise DockyardError(
            f"registry database {shown_url(engine.url)} is at schema revision {current!r}, "
            f"which this Dockyard does not know (its newest is {head!r}); it was upgraded by a "
            "newer Dockyard: upgrade Dockyard to use it"
        )
    with _ALEMBIC_LOCK, write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.info("registry database %s migrated to revision %s", shown_url(engine.url), head)


def _stamped_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in Alembic's version table (none when there is no table yet), read
    with SQLAlchemy alone."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return [str(revision) for revision in rows.scalars()]


def shown_url(url: URL | str) -> str:
    """The URL as safe to print: any password replaced by ``***``."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def error_cause(exc: Exception) -> str:
    """The driver's own message of a SQLAlchemy DBAPI error, on one line, without the SQL."""
    original = getattr(exc, "orig", None)
    message = str(original if original is not None else exc)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(
            "invalid registry database URL: expected sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from exc


def _sqlite_file(url: URL) -> URL:
    """The URL with ``~`` expanded (SQLite would not), its parent folder created."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return url
    path = Path(database).expanduser()
    folder = path.parent
    try:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise DockyardError(
            f"cannot open registry database {shown_url(url)}: cannot create folder {folder} "
            f"({exc.strerror or exc})"
        ) from exc
    return url.set(database=str(path))


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # isolation_level None: the sqlite3 module emits no BEGIN of its own; _on_sqlite_begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (a setting kept in the file, so usually already done).

    Switching a new file needs an exclusive lock, and SQLite answers "database is locked" at once,
    without waiting on the busy timeout, while another process is switching or recovering the same
    file; so retry until the timeout has passed.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(WAL_RETRY_S)


def _on_sqlite_begin(connection: Connection) -> None:
    is_write = bool(connection.get_execution_options().get(WRITE_OPTION, False))
    connection.exec_driver_sql("BEGIN IMMEDIATE" if is_write else "BEGIN")


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    # configparser interpolation: a '%' in the install path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())
