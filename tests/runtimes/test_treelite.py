"""The Treelite runtime: Treelite's own serialized format in, the source's outputs out."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import treelite
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor

from dockyard.errors import ArtifactCorrupt, InvalidInput
from dockyard.runtimes import treelite as treelite_runtime
from dockyard.runtimes.base import LoadOptions
from dockyard.runtimes.treelite_native import NATIVE_FORMAT, platform_tag

from .conftest import RoundTrip

CLASSIFIER_HEAD = {
    "outputs": [
        {"name": "predict", "role": "label", "dtype": "int64"},
        {"name": "predict_proba", "role": "proba", "dtype": "float64"},
    ],
    "classes": [3, 7],
}


def test_a_classifier_answers_labels_and_probabilities(
    features: np.ndarray, labels: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = HistGradientBoostingClassifier(max_iter=10).fit(features, labels * 4 + 3)
    imported = treelite.sklearn.import_model(model)

    saved, runtime = roundtrip(treelite_runtime, imported, head=CLASSIFIER_HEAD)

    assert saved.format == "treelite"
    assert saved.path.read_bytes() == bytes(imported.serialize_bytes())
    assert runtime.output_names == ("predict", "predict_proba")
    result = runtime.predict(features, ())
    np.testing.assert_array_equal(result["predict"], model.predict(features))
    assert result["predict"].dtype == np.int64
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(features), atol=1e-12)
    assert list(runtime.predict(features, ["predict_proba"])) == ["predict_proba"]


def test_a_regressor_answers_one_value_per_row(features: np.ndarray, roundtrip: RoundTrip) -> None:
    model = RandomForestRegressor(n_estimators=5, max_depth=3).fit(features, features[:, 2])

    _, runtime = roundtrip(treelite_runtime, treelite.sklearn.import_model(model))

    values = runtime.predict(features, ())["predict"]
    assert values.shape == (len(features),)
    np.testing.assert_allclose(values, model.predict(features), atol=1e-12)


def test_a_large_batch_is_predicted_on_many_threads_alike(
    features: np.ndarray, roundtrip: RoundTrip
) -> None:
    model = RandomForestRegressor(n_estimators=5, max_depth=3).fit(features, features[:, 2])
    _, runtime = roundtrip(treelite_runtime, treelite.sklearn.import_model(model))
    rows = np.tile(features, (10, 1))  # past SERIAL_ROWS

    np.testing.assert_allclose(
        runtime.predict(rows, ())["predict"], np.tile(model.predict(features), 10), atol=1e-12
    )


def test_a_pickle_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.treelite"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    options = LoadOptions(format="treelite", options=treelite_runtime.default_head())

    with pytest.raises(InvalidInput, match="treelite could not handle loading model.treelite"):
        treelite_runtime.load(path, options)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ({}, "must list its outputs"),
        ({"outputs": [{"name": "p", "role": "guess"}]}, "needs a role"),
        ({"outputs": [{"name": "p", "role": "label", "dtype": "int64"}]}, "list its classes"),
    ],
    ids=["no-outputs", "unknown-role", "labels-without-classes"],
)
def test_a_head_that_cannot_be_answered_is_refused(head: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        treelite_runtime.check_head(head)


def test_another_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot load an artifact of format 'onnx'"):
        treelite_runtime.load(tmp_path / "model.onnx", LoadOptions(format="onnx"))


@pytest.fixture
def native_library(tmp_path: Path, features: np.ndarray) -> tuple[Path, dict[str, object]]:
    """A regressor compiled by tl2cgen: the library and its options."""
    import hashlib

    import tl2cgen

    model = RandomForestRegressor(n_estimators=3, max_depth=3).fit(features, features[:, 2])
    library = tmp_path / "model.so"
    tl2cgen.export_lib(treelite.sklearn.import_model(model), toolchain="gcc", libpath=library)
    options = {
        **treelite_runtime.default_head(),
        "library_sha256": hashlib.sha256(library.read_bytes()).hexdigest(),
        "platform": platform_tag(),
    }
    return library, options


def test_native_code_loads_when_its_digest_matches(
    native_library: tuple[Path, dict[str, object]], features: np.ndarray, tmp_path: Path
) -> None:
    library, options = native_library
    opts = LoadOptions(format=NATIVE_FORMAT, options=options, cache_dir=tmp_path)
    runtime = treelite_runtime.load(library, opts)
    assert runtime.predict(features, ())["predict"].shape == (len(features),)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("native-")] == []


def test_native_code_whose_bytes_differ_is_not_loaded(
    native_library: tuple[Path, dict[str, object]],
) -> None:
    library, options = native_library
    library.write_bytes(library.read_bytes() + b"\0")
    with pytest.raises(ArtifactCorrupt):
        treelite_runtime.load(library, LoadOptions(format=NATIVE_FORMAT, options=options))


def test_native_code_built_elsewhere_is_not_loaded(
    native_library: tuple[Path, dict[str, object]],
) -> None:
    library, options = native_library
    foreign = {**options, "platform": "darwin-arm64"}
    with pytest.raises(InvalidInput, match="built for darwin-arm64.*--target native"):
        treelite_runtime.load(library, LoadOptions(format=NATIVE_FORMAT, options=foreign))
