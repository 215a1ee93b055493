"""Fixtures of the registry tests: a fresh registry database on each backend for every test.

SQLite is a file in ``tmp_path``; PostgreSQL is the server named by ``DOCKYARD_TEST_POSTGRES_URL``
(start one with ``.ci/ensure-postgres.sh``), each test in a schema of its own that is dropped after.
Without that variable the PostgreSQL cases are skipped, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url

from dockyard.registry.records import ArtifactRef, Lineage, ModelVersion, Signature, TensorSpec
from dockyard.registry.store import RegistryStore

POSTGRES_ENV = "DOCKYARD_TEST_POSTGRES_URL"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
DIGEST = "ab" * 32
SIGNATURE = Signature(
    inputs=(TensorSpec("amount", "FP64", (-1,)), TensorSpec("country", "BYTES", (-1,), True)),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
    tabular=True,
)
LINEAGE = Lineage(
    data_sha256="cd" * 32,
    data_rows=10,
    data_schema={"amount": "float64", "country": "object"},
    git_commit=None,
    python_version="3.11.7",
    packages={"numpy": "2.0.0"},
)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test PostgreSQL server, for creating and dropping per-test schemas."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = (
            f"{POSTGRES_ENV} is not set: run .ci/ensure-postgres.sh and export the "
            f"{POSTGRES_ENV}=... line it prints"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry' / 'dockyard.db'}"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"dockyard_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(admin.url).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(database_url: str) -> Iterator[RegistryStore]:
    registry = RegistryStore.open(database_url)
    yield registry
    registry.close()


@pytest.fixture
def make_version(store: RegistryStore) -> Callable[..., ModelVersion]:
    """Register a version of ``model`` (default "fraud") with sample values; keywords override."""

    def make(model: str = "fraud", **overrides: Any) -> ModelVersion:
        values: dict[str, Any] = {
            "model": model,
            "framework": "sklearn",
            "artifact": ArtifactRef(DIGEST, "skops"),
            "signature": SIGNATURE,
            "lineage": LINEAGE,
            **overrides,
        }
        return store.create_version(**values)

    return make
