"""``dockyard serve --require-signed``: signed versions serve; unsigned or tampered ones say why.

A real server over a home whose versions are signed through the CLI and then tampered with the way
someone with write access to the files would: the registry database row, the artifact's bytes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from clirun import run_cli as _cli
from dockyard.config import load_settings
from dockyard.errors import Forbidden
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from homes import open_unprotected
from servers import Server, dockyard_command, free_port

pytestmark = pytest.mark.e2e
ROW = {"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [0.1] * 30}]}


def _sign(capsys: pytest.CaptureFixture[str], home: Path, *refs: str) -> str:
    """Create a signing key in ``home`` and sign ``refs`` (each naming version 1) with it; the
    key's id."""
    code, out, err = _cli(capsys, "keys", "signing-create", "--home", str(home))
    assert code == 0, err
    key_id = out.split()[3]
    assert f"public key: {home / 'secrets' / f'signing-{key_id}.pub'}" in out
    for ref in refs:
        code, out, err = _cli(capsys, "models", "sign", ref, "--home", str(home))
        assert code == 0, err
        name = ref.partition("@")[0].partition(":")[0]
        assert out.startswith(f"signed {name}:1 (sklearn, sha256 ")
        assert out.strip().endswith(f"with key {key_id}")
    return key_id


def _register(home: Path, name: str, x: np.ndarray, y: np.ndarray) -> None:
    workspace = open_unprotected(home)
    model = DecisionTreeClassifier(max_depth=3).fit(x, y)
    register(workspace, model, Registration(name, reference_data=x[:50], alias="production"))


def _tamper(home: Path, name: str, column: str, value: str) -> None:
    """Edit version 1 of ``name`` in the registry database behind Dockyard's back."""
    with closing(sqlite3.connect(home / "dockyard.db")) as db, db:
        db.execute(
            f"UPDATE versions SET {column} = ? WHERE version = 1 AND model_id = "
            "(SELECT id FROM models WHERE name = ?)",
            (value, name),
        )


def _failure(url: str, name: str) -> str:
    """The reason ``name`` is not served: its metadata says failed, inference answers 503."""
    metadata = httpx.get(f"{url}/v2/models/{name}")
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["state"] == "failed"
    answer = httpx.post(f"{url}/v2/models/{name}/infer", json=ROW)
    assert answer.status_code == 503, answer.text
    reason: str = metadata.json()["reason"]
    assert reason in answer.json()["error"]
    return reason


def test_a_signed_version_serves_and_an_unsigned_one_says_so(
    served: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    start_server: Callable[..., Server],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(served, "unsigned", *tabular_data)
    _sign(capsys, served, "lr@production")
    server = start_server(served, "--require-signed")

    answer = httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{server.url}/v2/models/lr").json()["state"] == "ready"
    reason = _failure(server.url, "unsigned")
    assert reason.startswith("unsigned:1 is not signed")
    assert "not serving unsigned@production" in server.output()


def test_changed_metadata_is_refused_naming_the_fields(
    served: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    logistic: LogisticRegression,
    start_server: Callable[..., Server],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(served, "tree", *tabular_data)
    _register(served, "relabelled", *tabular_data)
    _sign(capsys, served, "lr", "tree", "relabelled")
    _tamper(served, "tree", "framework", "xgboost")
    with closing(sqlite3.connect(served / "dockyard.db")) as db, db:
        (signature,) = db.execute(
            "SELECT signature FROM versions WHERE model_id = "
            "(SELECT id FROM models WHERE name = 'relabelled')"
        ).fetchone()
    _tamper(served, "relabelled", "signature", signature.replace('"FP64"', '"FP32"'))
    server = start_server(served, "--require-signed")

    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=ROW).status_code == 200
    reason = _failure(server.url, "tree")
    assert reason.startswith("tree:1: its metadata changed since it was signed")
    assert reason.endswith("(framework)")
    reason = _failure(server.url, "relabelled")
    assert reason.startswith("relabelled:1: its metadata changed since it was signed")
    assert reason.endswith("(signature)")


def _serve_alone(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *dockyard_command(),
            "serve",
            "lr@production",
            "--require-signed",
            "--no-auth",
            "--port",
            str(free_port()),
        ],
        env={**os.environ, "DOCKYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What ``serve`` said besides the --no-auth warning: one line, no traceback."""
    lines = [line for line in result.stderr.splitlines() if "--no-auth" not in line]
    assert len(lines) == 1, result.stderr
    return lines


def test_changed_artifact_bytes_are_refused_at_start(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sign(capsys, served, "lr")
    digest = Workspace.open(load_settings({"home": served}, env={})).resolve("lr").artifact.digest
    blob = served / "artifacts" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    result = _serve_alone(served)
    assert result.returncode == Forbidden.exit_code, result.stderr
    (line,) = _error_lines(result)
    assert line.startswith(
        "error: cannot serve lr@production (version 1): lr:1: its artifact's bytes do not match "
        f"the signed digest (signed sha256 {digest}, the stored file {blob} has sha256 "
    )


def test_with_only_an_unsigned_version_serve_refuses_to_start(served: Path) -> None:
    result = _serve_alone(served)
    assert result.returncode == Forbidden.exit_code, result.stderr
    assert _error_lines(result)[0].startswith(
        "error: cannot serve lr@production (version 1): lr:1 is not signed; sign it with: "
        "dockyard models sign lr:1"
    )


def test_a_key_that_is_no_longer_trusted_is_named(
    served: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    revoked = _sign(capsys, served, "lr")
    (served / "secrets" / f"signing-{revoked}.pub").unlink()
    result = _serve_alone(served)
    assert result.returncode == Forbidden.exit_code, result.stderr
    (line,) = _error_lines(result)
    assert f"lr:1: signed by an untrusted key {revoked}" in line
