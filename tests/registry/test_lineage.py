"""capture_lineage: stable data fingerprints, the git commit, the environment."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dockyard.registry.lineage import capture_lineage, fingerprint

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


def _git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "train.py").write_text("print('training')\n")
    _git(path, "add", "train.py")
    _git(path, "commit", "-q", "-m", "train")
    return path


def test_equal_arrays_have_equal_fingerprints() -> None:
    data = np.arange(12, dtype=np.float64).reshape(4, 3)

    assert fingerprint(data) == fingerprint(data.copy())
    assert fingerprint(data) == fingerprint(np.asfortranarray(data))
    assert fingerprint(data) == fingerprint(data.tolist())


@pytest.mark.parametrize(
    "other",
    [
        np.arange(12, dtype=np.float32).reshape(4, 3),
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.arange(1, 13, dtype=np.float64).reshape(4, 3),
    ],
    ids=["dtype", "shape", "values"],
)
def test_different_arrays_have_different_fingerprints(other: np.ndarray) -> None:
    data = np.arange(12, dtype=np.float64).reshape(4, 3)

    assert fingerprint(data)[0] != fingerprint(other)[0]


def test_array_rows_and_schema() -> None:
    lineage = capture_lineage(np.zeros((5, 2), dtype=np.int32))

    assert lineage.data_rows == 5
    assert lineage.data_schema == {"input": "int32"}
    assert lineage.data_sha256 is not None
    assert len(lineage.data_sha256) == 64


def test_object_arrays_hash_their_values() -> None:
    first = np.array(["a", "bc", None], dtype=object)

    assert fingerprint(first) == fingerprint(np.array(["a", "bc", None], dtype=object))
    assert fingerprint(first)[0] != fingerprint(np.array(["ab", "c", None], dtype=object))[0]


def test_dataframes() -> None:
    frame = pd.DataFrame({"amount": [1.5, 2.5, 3.5], "country": ["fr", "de", "fr"]})
    relabelled = frame.set_axis([10, 11, 12])

    digest, rows, schema = fingerprint(frame)

    assert fingerprint(frame.copy()) == (digest, rows, schema)
    assert fingerprint(relabelled)[0] == digest
    assert fingerprint(frame.assign(country=["fr", "de", "it"]))[0] != digest
    assert fingerprint(frame.rename(columns={"amount": "value"}))[0] != digest
    assert fingerprint(frame.astype({"amount": "float32"}))[0] != digest
    assert rows == 3
    assert schema["amount"] == "float64"
    assert set(schema) == {"amount", "country"}


def test_mappings_of_arrays() -> None:
    data = {"image": np.zeros((2, 3, 3), dtype=np.uint8), "mask": np.ones(2, dtype=bool)}
    reordered = {"mask": data["mask"], "image": data["image"]}

    digest, rows, schema = fingerprint(data)

    assert fingerprint(reordered)[0] == digest
    assert fingerprint({**data, "mask": np.zeros(2, dtype=bool)})[0] != digest
    assert rows == 2
    assert schema == {"image": "uint8", "mask": "bool"}


def test_no_reference_data() -> None:
    lineage = capture_lineage(None)

    assert (lineage.data_sha256, lineage.data_rows, dict(lineage.data_schema)) == (None, None, {})


def test_git_commit_of_a_repository(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")

    assert capture_lineage(None, cwd=repo).git_commit == head

    (repo / "train.py").write_text("print('changed')\n")
    assert capture_lineage(None, cwd=repo).git_commit == f"{head}-dirty"


def test_no_git_commit_outside_a_repository(tmp_path: Path) -> None:
    assert capture_lineage(None, cwd=tmp_path).git_commit is None


def test_no_git_commit_without_git(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    assert capture_lineage(None, cwd=repo).git_commit is None


def test_environment() -> None:
    lineage = capture_lineage(np.zeros(3))

    assert lineage.python_version == platform.python_version()
    assert lineage.packages["numpy"] == np.__version__
    assert lineage.packages["pandas"] == pd.__version__
    assert "dockyard" in lineage.packages
    assert set(lineage.packages) <= {
        "numpy",
        "scikit-learn",
        "skops",
        "onnxruntime",
        "onnx",
        "xgboost",
        "lightgbm",
        "torch",
        "pandas",
        "dockyard",
    }
