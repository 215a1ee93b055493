"""The reference profile: what it records of numeric and categorical features and of the outputs,
checked against direct computations, and its bounded size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dockyard.monitoring.profile import (
    QUANTILES,
    SAMPLE_MAX,
    SAMPLE_MIN,
    TOP_CATEGORIES,
    capture_profile,
)
from dockyard.registry.records import Signature, TensorSpec

PROFILE_LIMIT_BYTES = 1_000_000


def tabular(*specs: TensorSpec, outputs: tuple[TensorSpec, ...] = ()) -> Signature:
    return Signature(inputs=specs, outputs=outputs, tabular=True)


def number(name: str) -> TensorSpec:
    return TensorSpec(name, "FP64", (-1,))


def as_json(profile: dict[str, object]) -> str:
    """The profile as the registry stores it: strict JSON (no NaN or infinity)."""
    return json.dumps(profile, allow_nan=False)


def test_a_numeric_feature_has_decile_bins_quantiles_and_moments() -> None:
    values = np.random.default_rng(0).gamma(2.0, size=20_000)
    values[:1000] = np.nan
    values[1000:1100] = np.inf
    profile = capture_profile(values.reshape(-1, 1), tabular(number("amount")), {})
    entry = profile["features"]["amount"]
    present = values[np.isfinite(values)]

    assert entry["column"] == "input.amount"
    assert entry["kind"] == "numeric"
    assert entry["count"] == 20_000
    assert entry["missing"] == pytest.approx(1100 / 20_000)
    assert entry["min"] == present.min()
    assert entry["max"] == present.max()
    assert entry["mean"] == pytest.approx(present.mean())
    assert entry["std"] == pytest.approx(present.std())
    assert list(entry["quantiles"]) == [f"{q:g}" for q in QUANTILES]
    assert list(entry["quantiles"].values()) == pytest.approx(
        np.quantile(present, QUANTILES), rel=1e-6
    )
    # 9 inner edges near the deciles; each bin [e_i, e_i+1) holds about a tenth of the values.
    edges = np.asarray(entry["edges"])
    assert len(edges) == 9
    assert edges == pytest.approx(np.quantile(present, np.arange(1, 10) / 10), rel=0.01)
    direct = np.bincount(np.searchsorted(edges, present, side="right"), minlength=10)
    assert entry["counts"] == direct.tolist()
    assert sum(entry["counts"]) == len(present)
    # The KS sample: sorted, bounded, spanning the reference from its min to its max.
    sample = entry["sample"]
    assert len(sample) == SAMPLE_MAX
    assert sample == sorted(sample)
    assert sample[0] == pytest.approx(present.min(), rel=1e-6)
    assert sample[-1] == pytest.approx(present.max(), rel=1e-6)
    as_json(profile)


def test_a_feature_of_few_values_gets_fewer_bins_holding_them_all() -> None:
    values = np.array([0.0] * 700 + [1.0] * 300)
    entry = capture_profile(values.reshape(-1, 1), tabular(number("flag")), {})["features"]["flag"]
    assert entry["edges"] == [0.0, 1.0]
    assert entry["counts"] == [0, 700, 300]


def test_a_feature_with_no_values_records_only_that_it_is_missing() -> None:
    values = np.full((10, 1), np.nan)
    entry = capture_profile(values, tabular(number("empty")), {})["features"]["empty"]
    assert entry["missing"] == 1.0
    assert entry["sample"] == []
    assert entry["min"] is None


def test_categorical_features_count_the_most_frequent_values_and_the_rest() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "country": rng.choice(["DE", "FR", "NL"], size=1000, p=[0.5, 0.3, 0.2]).astype(object),
            "user": [f"user-{i}" for i in range(1000)],
            "amount": rng.normal(size=1000),
        }
    )
    frame.loc[:49, "country"] = None
    frame.loc[50:59, "country"] = ""
    frame.loc[60, "user"] = "x" * 500  # free text is no category: counted with the rest
    signature = tabular(
        TensorSpec("country", "BYTES", (-1,), categorical=True),
        TensorSpec("user", "BYTES", (-1,), categorical=True),
        number("amount"),
    )
    profile = capture_profile(frame, signature, {})
    country = profile["features"]["country"]
    present = frame["country"][frame["country"].fillna("") != ""]
    expected = present.value_counts()
    assert country["kind"] == "categorical"
    assert country["missing"] == pytest.approx(60 / 1000)
    assert country["values"] == expected.index.tolist()
    assert country["counts"] == expected.tolist()
    assert country["other"] == 0
    assert country["distinct"] == 3

    user = profile["features"]["user"]
    assert len(user["values"]) == TOP_CATEGORIES
    assert "x" * 500 not in user["values"]
    assert user["other"] == 1000 - TOP_CATEGORIES
    assert user["distinct"] == 1000
    assert profile["features"]["amount"]["kind"] == "numeric"
    as_json(profile)


def test_booleans_are_categories_named_as_python_prints_them() -> None:
    flags = np.array([True, False, True, True]).reshape(-1, 1)
    entry = capture_profile(flags, tabular(TensorSpec("flag", "BOOL", (-1,))), {})["features"][
        "flag"
    ]
    assert entry["kind"] == "categorical"
    assert dict(zip(entry["values"], entry["counts"], strict=True)) == {"True": 3, "False": 1}


def test_outputs_profile_labels_as_categories_and_each_probability_column() -> None:
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=500)
    labels = proba.argmax(axis=1).astype(np.int64)
    predictions = {
        "predict": labels,
        "predict_proba": proba,
        "embedding": rng.normal(size=(500, 64)),
    }
    reference = rng.normal(size=(2000, 2))
    profile = capture_profile(reference, tabular(number("a"), number("b")), predictions)

    outputs = profile["outputs"]
    assert list(outputs) == [
        "output.predict",
        "output.predict_proba[0]",
        "output.predict_proba[1]",
        "output.predict_proba[2]",
    ]
    label = outputs["output.predict"]
    assert label["kind"] == "categorical"
    assert sorted(label["values"]) == ["0", "1", "2"]
    assert sum(label["counts"]) == 500
    second = outputs["output.predict_proba[1]"]
    assert (second["column"], second["index"], second["kind"]) == (
        "output.predict_proba",
        1,
        "numeric",
    )
    assert second["mean"] == pytest.approx(proba[:, 1].mean())
    assert "output.embedding" in profile["skipped"]
    assert (profile["rows"], profile["prediction_rows"]) == (2000, 500)


def test_a_tensor_model_profiles_its_per_row_scalars_and_skips_wider_inputs() -> None:
    rng = np.random.default_rng(3)
    reference = {"image": rng.normal(size=(50, 4, 4)), "age": rng.integers(18, 90, size=50)}
    signature = Signature(
        inputs=(TensorSpec("image", "FP64", (-1, 4, 4)), TensorSpec("age", "INT64", (-1,))),
        outputs=(),
        tabular=False,
    )
    profile = capture_profile(reference, signature, {})
    assert list(profile["features"]) == ["age"]
    assert profile["features"]["age"]["max"] == reference["age"].max()
    assert "input.image" in profile["skipped"]


def test_an_object_matrix_of_numbers_and_text_profiles_each_column_by_its_values() -> None:
    reference = np.array([[1.5, "a"], [2.5, "b"], [3.5, "a"]], dtype=object)
    signature = tabular(number("x"), TensorSpec("c", "BYTES", (-1,), categorical=True))
    profile = capture_profile(reference, signature, {})
    assert profile["features"]["x"]["mean"] == pytest.approx(2.5)
    assert profile["features"]["c"]["values"] == ["a", "b"]


def test_the_profile_of_500_features_stays_under_a_megabyte() -> None:
    """The samples share a budget: a wide model gets smaller samples, not a huge profile."""
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(5000, 500)) * rng.uniform(1, 1e6, size=500)
    signature = tabular(*(number(f"feature_{j}") for j in range(500)))
    predictions = {"predict_proba": rng.dirichlet([1.0, 1.0], size=5000)}
    profile = capture_profile(reference, signature, predictions)
    size = len(as_json(profile))
    assert size < PROFILE_LIMIT_BYTES, size
    assert all(len(entry["sample"]) == SAMPLE_MIN for entry in profile["features"].values())
    # A model of a few features keeps the full sample.
    few = capture_profile(reference[:, :3], tabular(number("a"), number("b"), number("c")), {})
    assert all(len(entry["sample"]) == SAMPLE_MAX for entry in few["features"].values())
