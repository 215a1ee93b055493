"""capture_lineage: stable data fingerprints, the named columns of the data schema, the git commit,
the environment."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from dockyard.errors import InvalidInput
from dockyard.registry.lineage import capture_lineage, fingerprint
from dockyard.services.datafiles import as_reference, read_columns
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
ABC = ["a", "b", "c"]


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
        "treelite",
        "pandas",
        "dockyard",
    }


def test_named_columns_of_an_array() -> None:
    data = np.arange(12, dtype=np.float64).reshape(4, 3)

    digest, rows, schema = fingerprint(data, ["a", "b", "c"])

    assert schema == {"a": "float64", "b": "float64", "c": "float64"}
    assert list(schema) == ["a", "b", "c"]
    assert rows == 4
    # Names describe the data; they do not change its fingerprint.
    assert digest == fingerprint(data)[0]
    assert capture_lineage(data, names=["a", "b", "c"]).data_schema == schema


def test_one_name_for_a_whole_array() -> None:
    pixels = np.zeros((2, 4, 4), dtype=np.uint8)

    assert fingerprint(pixels, ["pixels"])[2] == {"pixels": "uint8"}


def test_unnamed_arrays_keep_one_input_entry() -> None:
    data = np.zeros((3, 2), dtype=np.float32)

    assert fingerprint(data)[2] == {"input": "float32"}
    assert fingerprint(data, None)[2] == {"input": "float32"}


@pytest.mark.parametrize(
    ("names", "message"),
    [(["a", "b"], "2 names for reference data of shape \\[4, 3\\]"), (["a", "a", "b"], "differ")],
    ids=["count", "duplicates"],
)
def test_names_that_do_not_fit_the_array_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        fingerprint(np.zeros((4, 3)), names)


def _csv(path: Path, header: list[str], rows: np.ndarray) -> Path:
    lines = [",".join(header), *(",".join(repr(float(v)) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_registering_with_a_csv_header_records_its_columns(
    workspace: Workspace, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    reference, feature_names = as_reference(read_columns(_csv(tmp_path / "r.csv", ABC, x)))

    named = register(
        workspace, model, Registration("lr", reference_data=reference, feature_names=feature_names)
    )
    unnamed = register(workspace, model, Registration("lr", reference_data=x))

    assert dict(named.lineage.data_schema) == dict.fromkeys(ABC, "float64")
    assert [spec.name for spec in named.signature.inputs] == ABC
    # A plain array keeps its one entry; the names do not change the data's fingerprint.
    assert dict(unnamed.lineage.data_schema) == {"input": "float64"}
    assert named.lineage.data_sha256 == unnamed.lineage.data_sha256 == fingerprint(x)[0]


def test_registering_names_columns_after_the_model_or_its_signature(
    workspace: Workspace,
) -> None:
    x = np.random.default_rng(3).normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    trained_on_a_table = LogisticRegression().fit(pd.DataFrame(x, columns=ABC), y)
    signature = {
        "tabular": True,
        "inputs": [{"name": name, "datatype": "FP64"} for name in ("p", "q", "r")],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }

    from_model = register(workspace, trained_on_a_table, Registration("m", reference_data=x))
    declared = register(
        workspace,
        LogisticRegression().fit(x, y),
        Registration("s", reference_data=x, signature=signature),
    )

    assert list(from_model.lineage.data_schema) == ABC
    assert list(declared.lineage.data_schema) == ["p", "q", "r"]


def test_registering_a_tensor_model_names_its_one_input(workspace: Workspace) -> None:
    weights = np.ones((4, 2), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixels", "W"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    version = register(
        workspace, model, Registration("affine", reference_data=np.ones((5, 4), np.float32))
    )

    assert dict(version.lineage.data_schema) == {"pixels": "float32"}
