"""A home whose artifacts live in a shared S3 bucket (moto, on loopback): a backup holds the blobs
the registry uses, fetched through the store; ``dockyard doctor`` checks them through the store
and says when the bucket cannot be reached."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.config import load_settings
from dockyard.errors import InvalidInput
from dockyard.services.backup import create_backup
from dockyard.services.backup_restore import restore_backup
from dockyard.services.doctor import examine
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401


@pytest.fixture
def shared(
    home: Path,
    bucket: Bucket,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Workspace:
    """A home with ``lr`` version 1 stored in the bucket, its local cache emptied (as on a
    machine that has not fetched it yet)."""
    workspace = open_unprotected(home, artifact_url=bucket.url, s3_endpoint_url=bucket.endpoint)
    register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    shutil.rmtree(home / "artifacts-cache")
    return workspace


def test_a_backup_holds_the_blobs_fetched_from_the_bucket(
    shared: Workspace, tmp_path: Path
) -> None:
    digest = shared.resolve("lr:1").artifact.digest

    backup = create_backup(shared)

    restored = tmp_path / "restored"
    restore_backup(backup.path, restored)
    blob = restored / "artifacts" / digest[:2] / digest
    assert blob.read_bytes() == shared.artifacts.verified_path(digest).read_bytes()
    assert list((shared.home.artifacts).iterdir()) == []


def test_doctor_checks_artifacts_through_the_bucket(shared: Workspace, bucket: Bucket) -> None:
    digest = shared.resolve("lr:1").artifact.digest
    assert examine(shared.settings) == []
    assert (shared.home.artifacts_cache / digest[:2] / digest).is_file()  # fetched to be checked

    bucket.client.delete_object(Bucket=bucket.name, Key=bucket.key(digest))
    shutil.rmtree(shared.home.artifacts_cache)
    problems = [problem.what for problem in examine(shared.settings)]
    assert problems == [f"version lr:1's artifact sha256:{digest} is missing"]

    unreachable = dataclasses.replace(
        shared.settings, s3_endpoint_url="http://127.0.0.1:9", s3_timeout_s=0.5
    )
    (problem,) = examine(unreachable)
    assert problem.what.startswith("the artifact store cannot be checked: ")
    assert "DOCKYARD_S3_ENDPOINT_URL" in problem.what


def test_an_s3_url_is_refused_without_a_bucket_name(home: Path) -> None:
    settings = load_settings({"home": home, "artifact_url": "s3:///models"}, env={})
    with pytest.raises(InvalidInput, match="artifact_url must be s3://BUCKET/PREFIX"):
        Workspace.open(settings)
