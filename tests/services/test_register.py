"""Registration: nothing is committed unless the stored artifact loads and predicts correctly."""

from __future__ import annotations

import gc
import subprocess
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from dockyard.errors import InvalidInput, NotFound, PredictionFailed
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

BAD_MODELS = {
    "short": "def score(x):\n    return x[:-1, 0]\n",
    "raises": "def score(x):\n    raise RuntimeError('boom')\n",
}


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        (BAD_MODELS["short"], InvalidInput, "one prediction per row"),
        (BAD_MODELS["raises"], PredictionFailed, "RuntimeError"),
    ],
    ids=["wrong-row-count", "raises"],
)
def test_a_model_that_fails_its_reference_rows_is_not_registered(
    workspace: Workspace, tmp_path: Path, source: str, error: type[Exception], message: str
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "bad.py").write_text(source)
    request = Registration("bad", reference_data=np.ones((10, 3)), entrypoint="bad:score")
    with pytest.raises(error, match=message):
        register(workspace, code, request)
    with pytest.raises(NotFound):
        workspace.store.get_model("bad")


def test_reference_data_or_a_signature_is_required(
    workspace: Workspace, logistic: LogisticRegression
) -> None:
    with pytest.raises(InvalidInput, match="reference data is required"):
        register(workspace, logistic, Registration("lr"))


def test_explicit_signature_without_reference_data(
    workspace: Workspace, logistic: LogisticRegression
) -> None:
    signature = {
        "tabular": True,
        "inputs": [{"name": f"f{i}", "datatype": "FP64"} for i in range(30)],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    version = register(workspace, logistic, Registration("lr", signature=signature))
    assert [spec.name for spec in version.signature.inputs][:2] == ["f0", "f1"]
    assert version.lineage.data_sha256 is None


def test_lineage_records_the_callers_git_commit_and_data(
    workspace: Workspace,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print('train')\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "train"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    x = tabular_data[0][:100]
    version = register(
        workspace, logistic, Registration("lr", reference_data=x, cwd=repo, alias="staging")
    )
    assert version.lineage.git_commit == head
    assert version.lineage.data_rows == 100
    assert version.lineage.packages["scikit-learn"]
    assert version.aliases == ("staging",)
    assert workspace.resolve("lr@staging").version == 1


def test_a_failed_registration_leaves_no_blob_and_no_staging_folder(
    workspace: Workspace, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "bad.py").write_text(BAD_MODELS["raises"])
    request = Registration("bad", reference_data=np.ones((10, 3)), entrypoint="bad:score")
    with pytest.raises(PredictionFailed):
        register(workspace, code, request)
    assert workspace.artifacts.digests() == set()
    # The code folder goes with the runtime, once collected: on Python 3.13 the exception's
    # frames keep it alive in a reference cycle until the collector runs.
    gc.collect()
    assert [path.name for path in workspace.home.tmp.iterdir()] == [".lock"]


def test_a_failed_registration_keeps_the_blob_of_a_version_with_the_same_bytes(
    workspace: Workspace,
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    x = tabular_data[0]
    first = register(workspace, model, Registration("lr", reference_data=x[:20]))
    with pytest.raises((InvalidInput, PredictionFailed)):
        register(workspace, model, Registration("lr", reference_data=x[:20, :7]))
    assert workspace.artifacts.digests() == {first.artifact.digest}
    assert workspace.load(first).predict(x[:2], ())["predict"].shape == (2,)
