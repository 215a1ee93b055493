"""Two machines, one registry: two ``dockyard serve`` processes with homes of their own share one
PostgreSQL database and one S3 bucket (moto, on loopback). A version registered through either
home is served by both — fetched from the bucket into each home's cache, verified — and an alias
moved through one home reaches both servers. The homes share the API-key hash key through the
``api_key_secret`` setting, so a key made on one machine works on the other."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, make_url

from dockyard.security.principals import local_user
from dockyard.services.changes import set_alias
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401
from servers import Server
from waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
POSTGRES_ENV = "DOCKYARD_TEST_POSTGRES_URL"
X = np.random.default_rng(5).normal(size=(100, 3))
Y = (X[:, 0] > 0).astype(np.int64)
BODY = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [0.1] * 3}]}
SWAP_WITHIN_S = 10.0


@pytest.fixture
def shared_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"dockyard_shared_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _version(server: Server, key: str) -> str:
    answer = httpx.post(
        f"{server.url}/v2/models/lr/infer",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _cached(home: Path, digest: str) -> bool:
    return (home / "artifacts-cache" / digest[:2] / digest).is_file()


@pytest.mark.usefixtures("unprotected_config")
def test_two_servers_on_one_database_and_one_bucket_serve_and_follow_the_same_registry(
    tmp_path: Path,
    bucket: Bucket,
    shared_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = {
        "database_url": shared_database,
        "artifact_url": bucket.url,
        "s3_endpoint_url": bucket.endpoint,
        "api_key_secret": f"hash-key-{uuid.uuid4().hex}",
    }
    for name, value in shared.items():
        monkeypatch.setenv(f"DOCKYARD_{name.upper()}", value)
    monkeypatch.setenv("DOCKYARD_FOLLOW_INTERVAL_S", "0.3")
    homes = {machine: tmp_path / f"machine-{machine}" for machine in "ab"}
    workspaces: dict[str, Workspace] = {}
    try:
        for machine, home in homes.items():
            workspaces[machine] = open_unprotected(home, **shared)
        # Version 1 through machine a (production), version 2 through machine b.
        first = register(
            workspaces["a"],
            LogisticRegression().fit(X, Y),
            Registration("lr", reference_data=X, alias="production"),
        )
        second = register(
            workspaces["b"],
            LogisticRegression(C=0.1).fit(X, Y),
            Registration("lr", reference_data=X),
        )
        digests = {first.artifact.digest, second.artifact.digest}
        assert workspaces["a"].artifacts.digests() == digests
        assert [path for home in homes.values() for path in (home / "artifacts").iterdir()] == []

        with ThreadPoolExecutor(2) as pool:  # both start at once: half the wait
            starting = [
                pool.submit(Server, home, ["--workers", "1"], tmp_path / f"{m}.log", auth=True)
                for m, home in homes.items()
            ]
        servers = [future.result() for future in starting if future.exception() is None]
        try:
            for future in starting:
                future.result()  # a server that did not start fails the test, with its log
            # A key made on one machine works on the other: one hash key for the registry.
            key = next(s.admin_key for s in servers if (s.home / "secrets/admin-key").is_file())
            assert [_version(server, key) for server in servers] == ["1", "1"]
            assert _cached(homes["b"], first.artifact.digest)  # fetched from the bucket

            set_alias(workspaces["b"], local_user(), "lr", "production", 2)
            wait_for(
                lambda: all(_version(server, key) == "2" for server in servers),
                timeout_s=SWAP_WITHIN_S,
            )
            assert _cached(homes["a"], second.artifact.digest)
        finally:
            for server in servers:
                server.stop()
    finally:
        for workspace in workspaces.values():
            workspace.store.close()
