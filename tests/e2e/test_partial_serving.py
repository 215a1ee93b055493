"""One model that cannot be loaded does not take the others down; with nothing to serve, one line.

A real ``dockyard serve`` over a home where one of two registered models has a corrupt artifact.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from dockyard.errors import ArtifactCorrupt
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server, dockyard_command, free_port

pytestmark = pytest.mark.e2e
X = np.random.default_rng(5).normal(size=(100, 3))
Y = (X[:, 0] > 0).astype(np.int64)
ROWS = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [0.0] * 6}]}


def _home_with_a_broken_model(home: Path) -> Path:
    """Register ``good`` and ``broken`` (both with a production alias), then corrupt the
    artifact of ``broken`` in the store; returns the corrupted file."""
    workspace = open_unprotected(home)
    register(
        workspace,
        LogisticRegression().fit(X, Y),
        Registration("good", reference_data=X, alias="production"),
    )
    broken = register(
        workspace,
        DecisionTreeClassifier(max_depth=2).fit(X, Y),
        Registration("broken", reference_data=X, alias="production"),
    )
    digest = broken.artifact.digest
    blob = home / "artifacts" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    return blob


def test_the_other_models_serve_and_the_broken_one_says_why(
    home: Path, start_server: Callable[..., Server]
) -> None:
    blob = _home_with_a_broken_model(home)
    server = start_server(home, "good@production", "broken@production", "good:7")
    url = server.url

    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{url}/v2/models/good/infer", json=ROWS).status_code == 200
    assert httpx.get(f"{url}/v2/models/good").json()["state"] == "ready"

    ready = httpx.get(f"{url}/v2/models/broken/ready")
    assert ready.status_code == 503
    assert "is corrupt" in ready.json()["error"]
    assert "broken@production" in ready.json()["error"]

    metadata = httpx.get(f"{url}/v2/models/broken")
    assert metadata.status_code == 200, metadata.text
    described = metadata.json()
    assert described["state"] == "failed"
    # The reason names the file under the home without showing where the home is.
    shown = f"$DOCKYARD_HOME/{blob.relative_to(home)}"
    assert described["reason"].startswith(f"artifact {shown} is corrupt")
    assert str(home) not in metadata.text
    assert str(home) not in ready.text
    assert described["versions"] == ["1"]
    assert [spec["name"] for spec in described["inputs"]] == ["x0", "x1", "x2"]

    for path, body in (("/v2/models/broken/infer", ROWS), ("/v1/models/broken:predict", None)):
        answer = httpx.post(f"{url}{path}", json=body or {"instances": [[0.0, 0.0, 0.0]]})
        assert answer.status_code == 503, answer.text
        assert "failed to load" in answer.json()["error"]
        assert shown in answer.json()["error"]

    # A version that does not exist is the same kind of failure, under a name that does serve.
    missing = httpx.get(f"{url}/v2/models/good/versions/7/ready")
    assert missing.status_code == 503
    assert "has no version 7" in missing.json()["error"]
    assert httpx.get(f"{url}/v2/models/good/versions/7").json()["state"] == "failed"
    assert httpx.get(f"{url}/v2/models/nothing/ready").status_code == 404

    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        assert client.is_server_ready()
        assert client.is_model_ready("good")
        assert not client.is_model_ready("broken")
    finally:
        client.close()

    log = server.output()
    named = [line for line in log.splitlines() if "broken" in line]
    assert len(named) == 1, log
    assert "is corrupt" in named[0]
    assert "Traceback" not in log


def test_with_only_the_broken_model_serve_exits_with_its_code_and_one_line(home: Path) -> None:
    blob = _home_with_a_broken_model(home)
    result = subprocess.run(
        [*dockyard_command(), "serve", "broken@production", "--port", str(free_port())],
        env={**os.environ, "DOCKYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ArtifactCorrupt.exit_code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot serve broken@production (version 1): artifact ")
    assert str(blob) in lines[0]
