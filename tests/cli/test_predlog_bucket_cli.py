"""``dockyard monitor log --machines`` and ``dockyard data erase`` with ``prediction_log_url`` on a
real S3 server (moto, on loopback): two homes (two ``log_machine`` values) mirror to one bucket and
either reads both machines' rows; without the option a home reads its own; an erasure is mirrored
before the command returns; no setting, a missing bucket, no credentials or a malformed URL is one
line on stderr with its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.home import Home
from dockyard.monitoring.predlog import PredictionLog
from dockyard.monitoring.predlog.mirror import LogMirror
from dockyard.services.register import Registration, register
from homes import open_unprotected
from s3 import Bucket, aws_credentials_fixture, bucket_fixture, s3_endpoint_fixture  # noqa: F401
from servers import dockyard_command

LOGS = "logs"
FEATURES = 30


def log_requests(home: Path, requests: list[str], first_x: float = 0.0) -> None:
    """``requests`` of one row each answered by ``lr:1`` a minute ago, written to the home's
    log; the first feature of the n-th is ``first_x + n``."""
    version = open_unprotected(home).resolve("lr:1")
    log = PredictionLog(home / "predictions", clock=lambda: time.time() - 60)
    for n, request in enumerate(requests):
        x = np.zeros((1, FEATURES))
        x[0, 0] = first_x + n
        outputs = {"predict": np.array([1]), "predict_proba": np.array([[0.3, 0.7]])}
        log.append(version, request, "key:alice", 0.01, {"input-0": x}, outputs)
    assert log.flush() == len(requests)


def mirror(home: Path, bucket: Bucket, machine: str) -> None:
    settings = load_settings(
        {
            "home": home,
            "prediction_log_url": f"s3://{bucket.name}/{LOGS}",
            "s3_endpoint_url": bucket.endpoint,
            "log_machine": machine,
        },
        env={},
    )
    assert LogMirror.from_settings(settings, Home(home)).run().uploaded >= 1


@pytest.fixture
def two_homes(
    registered: Path,
    tmp_path: Path,
    bucket: Bucket,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, Path]:
    """Home a (``registered``, the commands' machine ``machine-a``) and home b (``machine-b``),
    each with its own requests to ``lr`` logged and mirrored to the bucket."""
    other = tmp_path / "home-b"
    register(
        open_unprotected(other), logistic, Registration("lr", reference_data=tabular_data[0][:20])
    )
    log_requests(registered, ["a-1", "a-2"])
    log_requests(other, ["b-1", "b-2", "b-3"], first_x=10.0)
    mirror(registered, bucket, "machine-a")
    mirror(other, bucket, "machine-b")
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG_URL", f"s3://{bucket.name}/{LOGS}")
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", bucket.endpoint)
    monkeypatch.setenv("DOCKYARD_LOG_MACHINE", "machine-a")
    return registered, other


def requests_read(capsys: pytest.CaptureFixture[str], home: Path, *options: str) -> list[str]:
    code, out, err = run_cli(
        capsys, "monitor", "log", "lr", "--format", "json", "--home", str(home), *options
    )
    assert code == 0, err
    return sorted(row["request_id"] for row in json.loads(out))


def test_monitor_log_reads_every_machine_with_machines_all(
    two_homes: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home_a, home_b = two_homes

    assert requests_read(capsys, home_a) == ["a-1", "a-2"]  # this home's log, as before
    every = ["a-1", "a-2", "b-1", "b-2", "b-3"]
    assert requests_read(capsys, home_a, "--machines", "all") == every
    assert requests_read(capsys, home_a, "--machines", "machine-b") == ["b-1", "b-2", "b-3"]
    cached = home_a / "predictions-cache" / "machine-b" / "lr"
    assert len([p for p in cached.rglob("*.parquet")]) == 1  # one flush: one segment
    # From the other home, named as its server names it, the same rows.
    monkeypatch.setenv("DOCKYARD_LOG_MACHINE", "machine-b")
    assert requests_read(capsys, home_b, "--machines", "all") == every


def test_an_erasure_is_mirrored_before_the_command_returns(
    two_homes: tuple[Path, Path],
    bucket: Bucket,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home_a, _ = two_homes
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.01")  # the erasure's wait for the writers
    [segment] = (home_a / "predictions" / "lr").rglob("*.parquet")
    key = f"{LOGS}/machine-a/lr/{segment.parent.name}/{segment.name}"
    before = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()

    code, out, err = run_cli(
        capsys, "data", "erase", "--subject", "x0=1", "--yes", "--home", str(home_a)
    )

    assert code == 0, err
    assert "lr: erased 1 logged rows" in out
    assert f"mirrored to s3://{bucket.name}/{LOGS}/machine-a: 1 segment(s) uploaded again" in out
    after = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    assert after == segment.read_bytes() != before
    assert requests_read(capsys, home_a, "--machines", "all") == ["a-1", "b-1", "b-2", "b-3"]


@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        (
            {"DOCKYARD_PREDICTION_LOG_URL": ""},
            2,
            "--machines reads the bucket of prediction_log_url",
        ),
        ({"DOCKYARD_PREDICTION_LOG_URL": "logs/here"}, 2, "prediction_log_url must be s3://"),
        ({"DOCKYARD_PREDICTION_LOG_URL": "s3://no-such-bucket/logs"}, 1, "does not exist"),
    ],
    ids=["unset", "malformed", "missing-bucket"],
)
def test_a_bucket_that_cannot_be_read_is_one_line(
    two_homes: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    code: int,
    message: str,
) -> None:
    home_a, _ = two_homes
    for name, value in env.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name)

    exit_code, out, err = run_cli(
        capsys, "monitor", "log", "lr", "--machines", "all", "--home", str(home_a)
    )

    assert (exit_code, out) == (code, "")
    assert message in err
    assert err.count("\n") == 1, err


def test_no_credentials_is_one_line(two_homes: tuple[Path, Path]) -> None:
    """In a process of its own, as a user runs it: the test process's client keeps the
    credentials it found first."""
    home_a, _ = two_homes
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS_KEY")}
    env.pop("AWS_SECRET_ACCESS_KEY")
    command = [*dockyard_command(), "monitor", "log", "lr", "--machines", "all"]

    done = subprocess.run(
        [*command, "--home", str(home_a)], env=env, capture_output=True, text=True, timeout=60
    )

    assert (done.returncode, done.stdout) == (1, "")
    assert "no usable AWS credentials for the prediction log bucket" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
