"""Crafted model files through the real front ends: ``dockyard models register`` and the API."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from crafted import datasource_skops
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e
REFERENCE = b"x0,x1\n0.5,1.5\n1.0,2.0\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder a crafted DataSource would delete when it is freed."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    return folder


def test_the_cli_refuses_a_skops_file_that_deletes_a_folder(
    home: Path, tmp_path: Path, victim: Path
) -> None:
    model = datasource_skops(tmp_path / "model.skops", victim)
    reference = tmp_path / "reference.csv"
    reference.write_bytes(REFERENCE)

    result = subprocess.run(
        [*dockyard_command(), "models", "register", str(model), "-n", "evil"]
        + ["--reference", str(reference), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "numpy.lib.npyio.DataSource" in result.stderr
    assert (victim / "keep.txt").read_text() == "keep"


def test_the_api_refuses_a_skops_file_that_deletes_a_folder(
    home: Path,
    tmp_path: Path,
    victim: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = tabular_data
    workspace = open_unprotected(home)
    register(workspace, logistic, Registration("lr", reference_data=x[:20], alias="production"))
    server = start_server(home)
    model = datasource_skops(tmp_path / "model.skops", victim)

    refused = httpx.post(
        f"{server.url}/api/models",
        data={"name": "evil"},
        files={"model": ("model.skops", model.read_bytes()), "reference": ("r.csv", REFERENCE)},
        timeout=60,
    )

    assert refused.status_code == 400, refused.text
    assert "numpy.lib.npyio.DataSource" in refused.json()["error"]
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    server.stop()  # an object kept alive by the error's traceback is freed by exit at the latest
    assert (victim / "keep.txt").read_text() == "keep"
