"""Opening a registry that is already at the newest revision without importing Alembic.

``dockyard.registry.db.HEAD_REVISION`` is what lets every command skip Alembic: it must name the
newest migration, or a database one migration behind would be taken as up to date.
"""

from __future__ import annotations

import subprocess
import sys

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from dockyard.registry import db
from dockyard.registry.db import HEAD_REVISION, MIGRATIONS_DIR, VERSION_TABLE, open_engine

OPEN_AND_LIST_MODULES = """
import sys
from dockyard.registry.db import open_engine

open_engine(sys.argv[1]).dispose()
print(" ".join(sorted(sys.modules)))
"""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def test_head_revision_is_alembics_only_head() -> None:
    scripts = ScriptDirectory.from_config(_config())
    assert scripts.get_heads() == [HEAD_REVISION], (
        "a migration was added: set dockyard.registry.db.HEAD_REVISION to its revision"
    )


def test_a_database_at_head_opens_without_alembic(database_url: str) -> None:
    open_engine(database_url).dispose()  # creates and migrates it

    opened = subprocess.run(
        [sys.executable, "-c", OPEN_AND_LIST_MODULES, database_url],
        capture_output=True,
        text=True,
        check=True,
    )

    modules = opened.stdout.split()
    assert "sqlalchemy" in modules
    assert not [name for name in modules if name == "alembic" or name.startswith("alembic.")]


def test_a_database_behind_head_is_still_upgraded(database_url: str) -> None:
    engine = open_engine(database_url)
    previous = ScriptDirectory.from_config(_config()).get_revision(HEAD_REVISION).down_revision
    assert isinstance(previous, str)
    try:
        with engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            command.downgrade(config, previous)
    finally:
        engine.dispose()

    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            stamps = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        assert stamps == [(HEAD_REVISION,)]
        assert "version_signatures" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_stamped_revisions_read_the_version_table(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        with engine.connect() as connection:
            assert db._stamped_revisions(connection) == [HEAD_REVISION]
            connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
            assert db._stamped_revisions(connection) == []
    finally:
        engine.dispose()
