"""Opening the registry database: migrations, concurrent first opens, SQLite settings, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text

from dockyard.errors import Conflict, DockyardError, InvalidInput, MissingExtra, Unavailable
from dockyard.registry.db import HEAD_REVISION, MIGRATIONS_DIR, database_errors, open_engine
from dockyard.registry.tables import metadata, models

PROCESSES = 4
REGISTRY_TABLES = {
    "models",
    "versions",
    "aliases",
    "model_tags",
    "api_keys",
    "security_events",
    "version_signatures",
}
OPEN_IN_CHILD = """
import sys
from dockyard.registry.db import open_engine

print("ready", flush=True)
sys.stdin.readline()
open_engine(sys.argv[1]).dispose()
"""


def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), metadata)
            revision = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()

    assert diffs == []
    assert revision == HEAD_REVISION


def test_opening_again_changes_nothing(database_url: str) -> None:
    open_engine(database_url).dispose()
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            stamps = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()

    assert stamps == [(HEAD_REVISION,)]


def test_concurrent_first_opens_all_succeed(database_url: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_IN_CHILD, database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        # Every child has imported everything before any starts, so the opens really overlap.
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    assert [child.returncode for child in children] == [0] * PROCESSES, results
    engine = open_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= REGISTRY_TABLES
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    engine = open_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert not REGISTRY_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

    engine = open_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= REGISTRY_TABLES
    finally:
        engine.dispose()


def test_a_newer_schema_is_refused(database_url: str) -> None:
    engine = open_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()

    with pytest.raises(DockyardError, match="schema revision '9999'.*upgrade Dockyard"):
        open_engine(database_url)


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'dockyard.db'}")
    try:
        for _ in range(2):
            with engine.connect() as connection:
                journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
                timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                assert (journal, foreign_keys, timeout) == ("wal", 1, 5000)
                connection.invalidate()
    finally:
        engine.dispose()
    assert (tmp_path / "new" / "folder" / "dockyard.db").is_file()


def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'dockyard.db'}")
    try:
        with (
            pytest.raises(Conflict, match="FOREIGN KEY"),
            database_errors(engine),
            engine.begin() as connection,
        ):
            connection.execute(
                text("INSERT INTO model_tags (model_id, key, value) VALUES (42, 'a', 'b')")
            )
    finally:
        engine.dispose()


def test_duplicates_become_conflicts(database_url: str) -> None:
    engine = open_engine(database_url)
    row = {"name": "fraud", "description": "", "created_at": text("CURRENT_TIMESTAMP")}
    try:
        with engine.begin() as connection:
            connection.execute(insert(models).values(**row))
        with (
            pytest.raises(Conflict, match="registry database .* refused the change"),
            database_errors(engine),
            engine.begin() as connection,
        ):
            connection.execute(insert(models).values(**row))
    finally:
        engine.dispose()


def test_a_file_in_place_of_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'sub' / 'dockyard.db'}"

    with pytest.raises(DockyardError, match="cannot open registry database sqlite:///") as caught:
        open_engine(url)
    assert str(blocker / "sub") in str(caught.value)
    assert "Not a directory" in str(caught.value)


def test_a_folder_in_place_of_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"

    with pytest.raises(DockyardError) as caught:
        open_engine(url)
    assert str(caught.value) == (
        f"cannot open registry database {url}: unable to open database file"
    )


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "dockyard.db"
    path.write_bytes(b"this is not a SQLite database, just some text that is long enough" * 20)

    with pytest.raises(DockyardError, match="cannot open registry database .*not a database"):
        open_engine(f"sqlite:///{path}")


def test_home_folder_in_sqlite_paths_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    open_engine("sqlite:///~/dockyard-home/dockyard.db").dispose()

    assert (tmp_path / "dockyard-home" / "dockyard.db").is_file()


def test_unreachable_postgres_names_it_without_the_password() -> None:
    url = "postgresql+psycopg://dockyard:s3cret@127.0.0.1:1/registry"

    with pytest.raises(Unavailable, match="cannot open registry database") as caught:
        open_engine(url)
    message = str(caught.value)
    assert "postgresql+psycopg://dockyard:***@127.0.0.1:1/registry" in message
    assert "s3cret" not in message


def test_missing_postgres_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)

    with pytest.raises(MissingExtra, match=r"pip install 'dockyard\[postgres\]'"):
        open_engine("postgresql://dockyard:secret@127.0.0.1/registry")


@pytest.mark.parametrize(
    "url",
    ["mysql://root@localhost/dockyard", "not a url"],
    ids=["unsupported", "malformed"],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="sqlite:///PATH"):
        open_engine(url)
