"""Drift of a window of logged rows from a reference profile: the measures against direct
computations (scipy's KS and chi-square, PSI by its formula), the drift rule, small windows, data
quality, and the window's syntax."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from dockyard.errors import InvalidInput
from dockyard.monitoring.drift import (
    EPSILON,
    Thresholds,
    Window,
    compute_drift,
)
from dockyard.monitoring.profile import capture_profile
from dockyard.registry.records import Signature, TensorSpec

THRESHOLDS = Thresholds(psi=0.2, pvalue=0.01)


def profile_of(columns: dict[str, np.ndarray], predictions: dict[str, np.ndarray] | None = None):
    """The profile of a reference table: numeric arrays are numbers, object arrays categories."""
    specs = tuple(
        TensorSpec(name, "BYTES", (-1,), categorical=True)
        if values.dtype.kind == "O"
        else TensorSpec(name, "FP64", (-1,))
        for name, values in columns.items()
    )
    reference = np.empty((len(next(iter(columns.values()))), len(columns)), dtype=object)
    for j, values in enumerate(columns.values()):
        reference[:, j] = values
    return capture_profile(reference, Signature(specs, (), True), predictions or {})


def window(columns: dict[str, object]) -> pa.Table:
    """Logged rows: ``input.<name>`` columns."""
    return pa.table({f"input.{name}": values for name, values in columns.items()})


def by_name(report) -> dict:
    return {feature.feature: feature for feature in report.features}


def test_ks_is_scipys_two_sample_test_against_the_reference_sample() -> None:
    rng = np.random.default_rng(0)
    reference = {"smooth": rng.normal(size=50_000), "counts": rng.poisson(3, 50_000) * 1.0}
    profile = profile_of(reference)
    live = {"smooth": rng.normal(0.05, 1.0, size=30_000), "counts": rng.poisson(3.2, 30_000) * 1.0}
    found = by_name(compute_drift(profile, window(live), THRESHOLDS))
    for name in ("smooth", "counts"):  # continuous, and integers full of ties
        sample = np.asarray(profile["features"][name]["sample"])
        direct = stats.ks_2samp(live[name], sample, method="asymp")
        assert found[name].test == "ks"
        assert found[name].statistic == pytest.approx(direct.statistic, abs=1e-12)
        assert found[name].p_value == pytest.approx(direct.pvalue, rel=1e-9)


def test_psi_is_computed_over_the_reference_bins() -> None:
    rng = np.random.default_rng(1)
    profile = profile_of({"amount": rng.lognormal(size=20_000)})
    live = rng.lognormal(0.6, 1.3, size=40_000)
    entry = profile["features"]["amount"]
    edges = np.asarray(entry["edges"])
    live_share = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(edges) + 1)
    p = np.maximum(live_share / len(live), EPSILON)
    q = np.maximum(np.asarray(entry["counts"]) / sum(entry["counts"]), EPSILON)
    direct = float(np.sum((p - q) * np.log(p / q)))

    drift = by_name(compute_drift(profile, window({"amount": live}), THRESHOLDS))["amount"]
    assert drift.psi == pytest.approx(direct, rel=1e-9)
    assert drift.psi > THRESHOLDS.psi
    assert drift.drifted


def test_chi_square_tests_the_live_and_reference_counts_as_two_samples() -> None:
    rng = np.random.default_rng(2)
    names = np.array(["DE", "FR", "NL", "BE"], dtype=object)
    reference = rng.choice(names, size=10_000, p=[0.4, 0.3, 0.2, 0.1])
    profile = profile_of({"country": reference})
    live = rng.choice(names, size=5_000, p=[0.36, 0.32, 0.2, 0.12])
    entry = profile["features"]["country"]
    observed = [int((live == value).sum()) for value in entry["values"]]
    direct = stats.chi2_contingency([entry["counts"], observed], correction=False)

    drift = by_name(compute_drift(profile, window({"country": live}), THRESHOLDS))["country"]
    assert drift.test == "chi2"
    assert drift.statistic == pytest.approx(direct.statistic, rel=1e-9)
    assert drift.p_value == pytest.approx(direct.pvalue, rel=1e-9)
    assert drift.drifted  # p far below 0.01, though PSI stays small
    assert drift.psi < THRESHOLDS.psi


def test_exactly_the_shifted_columns_drift() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    colors = np.array(["red", "green", "blue"], dtype=object)
    reference = {
        "steady": rng.normal(size=n),
        "moved": rng.normal(size=n),
        "wider": rng.normal(size=n),
        "skewed": rng.exponential(size=n),
        "color": rng.choice(colors, size=n, p=[0.5, 0.3, 0.2]),
        "shape": rng.choice(np.array(["round", "square"], dtype=object), size=n),
    }
    profile = profile_of(reference)
    live = {
        "steady": rng.normal(size=5_000),
        "moved": rng.normal(0.5, 1.0, size=5_000),
        "wider": rng.normal(0.0, 2.0, size=5_000),
        "skewed": rng.exponential(size=5_000),
        "color": rng.choice(colors, size=5_000, p=[0.2, 0.3, 0.5]),
        "shape": rng.choice(np.array(["round", "square"], dtype=object), size=5_000),
    }
    report = compute_drift(profile, window(live), THRESHOLDS)
    assert report.drifted == ["moved", "wider", "color"]
    assert report.rows == 5_000


def test_a_small_window_from_the_reference_distribution_is_not_flagged() -> None:
    """PSI of ten bins over 30 rows is large by chance alone; pooled buckets keep it honest."""
    rng = np.random.default_rng(4)
    names = [f"f{j}" for j in range(40)]
    profile = profile_of({name: rng.normal(size=10_000) for name in names})
    flagged = []
    for _ in range(10):
        live = {name: rng.normal(size=30) for name in names}
        flagged += compute_drift(profile, window(live), THRESHOLDS).drifted
    # 400 columns judged: the p-value alone allows about 1 % of them by chance.
    assert len(flagged) <= 8, flagged
    # ... while 30 rows of a real shift are still seen.
    live = {name: rng.normal(1.5, 1.0, size=30) for name in names}
    assert len(compute_drift(profile, window(live), THRESHOLDS).drifted) == len(names)


def test_data_quality_missing_out_of_range_and_unseen_categories() -> None:
    rng = np.random.default_rng(5)
    reference = {
        "amount": rng.uniform(0, 100, size=10_000),
        "country": rng.choice(np.array(["DE", "FR"], dtype=object), size=10_000),
    }
    reference["amount"][:500] = np.nan
    profile = profile_of(reference)
    amount = rng.uniform(0, 120, size=1_000)  # 1/6 of it above the reference's max
    amount[:100] = np.nan
    country = rng.choice(np.array(["DE", "FR", "IT", "ES"], dtype=object), size=1_000)
    table = pa.table(
        {
            "input.amount": pa.array(np.where(np.arange(1_000) < 50, None, amount)),
            "input.country": pa.array(np.where(np.arange(1_000) < 200, None, country)),
        }
    )
    found = by_name(compute_drift(profile, table, THRESHOLDS))

    assert found["amount"].missing == pytest.approx(0.1)  # null and NaN alike
    assert found["amount"].reference_missing == pytest.approx(0.05)
    present = amount[100:]
    assert found["amount"].values == len(present)
    assert found["amount"].out_of_range == pytest.approx(
        np.mean(present > np.nanmax(reference["amount"]))
    )
    tail = country[200:]
    assert found["country"].missing == pytest.approx(0.2)
    assert found["country"].unseen == pytest.approx(np.isin(tail, ["IT", "ES"]).mean())
    assert set(found["country"].unseen_examples) == {"IT", "ES"}
    assert found["country"].drifted


def test_unseen_is_unknown_when_the_profile_lists_only_the_most_frequent_categories() -> None:
    rng = np.random.default_rng(6)
    profile = profile_of({"user": np.array([f"u{i}" for i in range(500)], dtype=object)})
    live = np.array([f"u{i}" for i in rng.integers(0, 600, size=400)], dtype=object)
    drift = by_name(compute_drift(profile, window({"user": live}), THRESHOLDS))["user"]
    assert drift.unseen is None
    assert drift.unseen_examples == ()


def test_outputs_drift_too_probabilities_read_from_their_list_column() -> None:
    rng = np.random.default_rng(7)
    proba = rng.beta(2, 5, size=5_000)
    predictions = {
        "predict_proba": np.column_stack([1 - proba, proba]),
        "predict": (proba > 0.5).astype(np.int64),
    }
    profile = profile_of({"x": rng.normal(size=5_000)}, predictions)
    live = rng.beta(5, 2, size=2_000)  # the model now says "yes" much more often
    lists: list[list[float] | None] = [[1 - p, p] for p in live]
    lists[:100] = [None] * 100
    table = pa.table(
        {
            "input.x": rng.normal(size=2_000),
            "output.predict_proba": pa.array(lists, pa.list_(pa.float64())),
            "output.predict": (live > 0.5).astype(np.int64),
        }
    )
    found = by_name(compute_drift(profile, table, THRESHOLDS))
    assert set(found) == {
        "x",
        "output.predict_proba[0]",
        "output.predict_proba[1]",
        "output.predict",
    }
    assert found["output.predict_proba[1]"].values == 1_900
    assert found["output.predict_proba[1]"].missing == pytest.approx(0.05)
    sample = profile["outputs"]["output.predict_proba[1]"]["sample"]
    direct = stats.ks_2samp(live[100:], sample, method="asymp")
    assert found["output.predict_proba[1]"].statistic == pytest.approx(direct.statistic)
    assert [name for name, drift in found.items() if drift.drifted] == [
        "output.predict_proba[0]",
        "output.predict_proba[1]",
        "output.predict",
    ]


def test_a_column_the_window_lacks_is_all_missing_and_not_judged() -> None:
    profile = profile_of({"a": np.arange(100.0), "b": np.arange(100.0)})
    drift = by_name(compute_drift(profile, window({"a": np.arange(50.0)}), THRESHOLDS))["b"]
    assert (drift.missing, drift.values, drift.drifted, drift.p_value) == (1.0, 0, False, None)


def test_each_threshold_decides_on_its_own() -> None:
    rng = np.random.default_rng(8)
    profile = profile_of({"x": rng.normal(size=20_000)})
    table = window({"x": rng.normal(0.25, 1.0, size=20_000)})
    drift = by_name(compute_drift(profile, table, THRESHOLDS))["x"]
    assert drift.psi < 0.2
    assert drift.p_value is not None
    assert drift.p_value < 0.01
    assert compute_drift(profile, table, Thresholds(psi=0.2, pvalue=0.01)).drifted == ["x"]
    assert compute_drift(profile, table, Thresholds(psi=0.2, pvalue=1e-300)).drifted == []
    assert compute_drift(profile, table, Thresholds(psi=drift.psi / 2, pvalue=0.0)).drifted == ["x"]


def test_the_stored_row_names_its_score_psi_and_its_test() -> None:
    profile = profile_of({"x": np.arange(1000.0), "c": np.array(["a", "b"] * 500, dtype=object)})
    report = compute_drift(profile, window({"x": np.arange(500.0), "c": ["a"] * 500}), THRESHOLDS)
    rows = {feature.feature: feature.to_dict() for feature in report.features}
    assert rows["x"]["method"] == "psi+ks"
    assert rows["c"]["method"] == "psi+chi2"
    assert rows["c"]["score"] == report.features[1].psi
    assert report.to_dict()["drifted"] == report.drifted


@pytest.mark.parametrize(
    ("text", "span", "rows"),
    [
        ("24h", timedelta(hours=24), None),
        ("30m", timedelta(minutes=30), None),
        ("7d", timedelta(days=7), None),
        ("100000rows", None, 100_000),
    ],
)
def test_a_window_is_a_time_or_a_row_count(
    text: str, span: timedelta | None, rows: int | None
) -> None:
    window = Window.parse(text)
    assert (window.text, window.span, window.rows) == (text, span, rows)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "must be a time like 24h"),
        ("0rows", "must be a time like 24h"),
        ("-5rows", "must be a time like 24h"),
        ("0h", "empty"),
        ("12345678901rows", "must be a time like 24h"),
        ("1" * 100 + "h", "characters long"),
    ],
)
def test_a_bad_window_is_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Window.parse(text)
