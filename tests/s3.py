"""A real S3-compatible server for the shared artifact store's tests: moto's, in this process, on a
free loopback port (one per test module), and a new bucket for each test, with AWS credentials set
for that test only (and nothing read from ``~/.aws`` or an instance's metadata service).

A test module imports the fixtures it uses (``from s3 import bucket_fixture``); they are named
``s3_endpoint``, ``aws_credentials`` and ``bucket``."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers import free_port

PREFIX = "team/models"
REGION = "us-east-1"


@dataclass(frozen=True)
class Bucket:
    """A bucket on the test server, and a client of it for what a test does behind the store."""

    endpoint: str
    name: str
    client: Any

    @property
    def url(self) -> str:
        """The ``artifact_url`` of the bucket's ``PREFIX``."""
        return f"s3://{self.name}/{PREFIX}"

    def key(self, digest: str) -> str:
        return f"{PREFIX}/{digest[:2]}/{digest}"

    def env(self) -> dict[str, str]:
        """The settings that put a home's artifacts in this bucket, as environment variables."""
        return {"DOCKYARD_ARTIFACT_URL": self.url, "DOCKYARD_S3_ENDPOINT_URL": self.endpoint}


@pytest.fixture(scope="module", name="s3_endpoint")
def s3_endpoint_fixture() -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1, for the module's tests."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(name="aws_credentials")
def aws_credentials_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials in the environment (inherited by the servers a test starts); no AWS
    config file, profile or instance metadata lookup can reach anything else."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dockyard-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dockyard-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="bucket")
def bucket_fixture(s3_endpoint: str, aws_credentials: None) -> Bucket:
    """A new, empty bucket on the module's server."""
    client = _session().client("s3", endpoint_url=s3_endpoint)
    name = f"dockyard-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return Bucket(s3_endpoint, name, client)


@functools.cache
def _session() -> Any:
    """One boto3 session for the tests' clients: it reads the service models once."""
    import boto3.session

    return boto3.session.Session()
