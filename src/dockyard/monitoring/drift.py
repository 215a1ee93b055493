"""Live drift: a window of the prediction log against the version's reference profile, per feature
and per output, vectorised over Arrow columns (a million logged rows of 30 features in about 2 s,
the read included, on two busy cores).

For each profiled column:

- numeric: the population stability index (PSI) of the live values over the reference's decile
  bins, and the two-sample Kolmogorov-Smirnov test against the profile's reference sample. The KS
  statistic is exact for those two samples, computed from one sort of the live values and binary
  searches of the sample's values in them (no per-row search); its p-value is the asymptotic
  one ``scipy.stats.ks_2samp`` gives (``method="asymp"``).
- categorical: PSI over the reference's categories, and the chi-square test that the reference
  counts and the live counts come from one distribution (``scipy.stats.chi2_contingency``, no
  continuity correction: a two-sample test, as KS is, so a small reference is not taken for the
  truth). Live values that are not among the reference's listed categories count in one bucket
  with the reference's unlisted ones ("the rest"), so a category that appears in live traffic
  only moves both measures.

PSI and chi-square are computed over buckets that each expect at least ``MIN_EXPECTED`` values of
the smaller of the two samples: smaller buckets are pooled (the smallest first). This keeps both
honest on a small window or a small reference (PSI of 10 bins over 30 rows is large by chance
alone; the chi-square approximation needs such counts) and changes nothing on large ones.

The rule: a column has drifted when PSI > ``drift_psi_threshold`` or the test's p-value <
``drift_pvalue`` (both settings). Data quality is reported beside it and does not decide it: the
live missing share (null, NaN, infinity, or "" for a category) against the reference's, the share
of live values outside the reference's [min, max], and the share of values of categories the
reference never had (known when the profile lists all of them).

The window is the newest rows of the version's log: by time (``24h``: since then) or by count
(``100000rows``); only the profiled columns are read, so memory follows the window, not the log.
A window is cut to its newest rows at ``MAX_WINDOW_VALUES`` values (rows × profiled columns, about
0.5 GB as float64: nearly two million rows of 30 features and 3 outputs), whatever it asks for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats
from sqlalchemy import Engine, func, insert, select

from dockyard.config import Settings
from dockyard.errors import Conflict, DockyardError, InvalidInput
from dockyard.home import Home
from dockyard.monitoring.predlog import log_cipher, read_predictions
from dockyard.monitoring.profile import category_text, numeric_values
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import drift_reports
from dockyard.security.keystore import parse_duration

logger = logging.getLogger(__name__)

MIN_EXPECTED = 20
"""Values of the smaller sample a PSI or chi-square bucket must expect; smaller ones are pooled."""
EPSILON = 1e-4
"""The smallest share PSI takes for a bucket (an empty bucket would make it infinite)."""
MAX_WINDOW_VALUES = 64_000_000
"""The most values (rows × profiled columns) one computation reads: the newest rows."""
UNSEEN_EXAMPLES = 5
WINDOW_CHARS = 32
"""A window text longer than this is refused without being echoed."""
ROWS_WINDOW = re.compile(r"^([1-9][0-9]{0,9})rows$")


@dataclass(frozen=True)
class Window:
    """The live traffic drift looks at: the rows since ``span`` ago, or the newest ``rows``
    (both: the newest ``rows`` of those since ``span`` ago)."""

    text: str
    span: timedelta | None
    rows: int | None

    @classmethod
    def parse(cls, text: str) -> Window:
        """``24h``, ``30m``, ``7d`` (a time) or ``100000rows`` (a count); InvalidInput else."""
        text = text.strip()
        if len(text) > WINDOW_CHARS:
            raise InvalidInput(
                f"drift window is {len(text)} characters long; give a time like 24h or a row "
                "count like 100000rows"
            )
        match = ROWS_WINDOW.match(text)
        if match is not None:
            return cls(text, None, int(match[1]))
        try:
            span = parse_duration(text)
        except InvalidInput:
            raise InvalidInput(
                f"drift window {text!r} must be a time like 24h, 30m or 7d, or a row count "
                "like 100000rows"
            ) from None
        if not span:
            raise InvalidInput(f"drift window {text!r} is empty; give a time above zero")
        return cls(text, span, None)

    def capped(self, rows: int) -> Window:
        """This window, reading at most its newest ``rows`` (the periodic job's bound)."""
        if self.rows is not None and self.rows <= rows:
            return self
        return Window(f"{self.text}, newest {rows} rows", self.span, rows)


@dataclass(frozen=True)
class Thresholds:
    """When a column has drifted: PSI above ``psi``, or its test's p-value below ``pvalue``."""

    psi: float
    pvalue: float

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        return cls(settings.drift_psi_threshold, settings.drift_pvalue)


@dataclass(frozen=True)
class FeatureDrift:
    """One input feature (``amount``) or output column (``output.proba[1]``) of one report."""

    feature: str
    kind: str
    """numeric or categorical"""
    test: str
    """ks (numeric) or chi2 (categorical): the test that gives ``p_value``"""
    psi: float
    statistic: float
    """The KS distance or the chi-square statistic."""
    p_value: float | None
    """None when there is nothing to test (no live values, or one bucket)."""
    drifted: bool
    values: int
    """Live values (not missing) in the window."""
    missing: float
    reference_missing: float
    out_of_range: float | None
    """Numeric: the share of live values below the reference's min or above its max."""
    unseen: float | None
    """Categorical: the share of live values of categories the reference never had; None when
    the profile lists only its most frequent categories (then they count with "the rest")."""
    unseen_examples: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        """What the stored row's ``method`` says: its score is PSI, its p-value from the test."""
        return f"psi+{self.test}"

    def details(self) -> dict[str, Any]:
        """The data-quality part and the test's statistic, for ``drift_reports.details``."""
        return {
            "kind": self.kind,
            "statistic": self.statistic,
            "values": self.values,
            "missing": self.missing,
            "reference_missing": self.reference_missing,
            "out_of_range": self.out_of_range,
            "unseen": self.unseen,
            "unseen_examples": list(self.unseen_examples),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "method": self.method,
            "score": self.psi,
            "p_value": self.p_value,
            "drifted": self.drifted,
            **self.details(),
        }


@dataclass(frozen=True)
class DriftReport:
    """Drift of every profiled column over one window of ``rows`` logged rows."""

    rows: int
    features: tuple[FeatureDrift, ...]
    thresholds: Thresholds

    @property
    def drifted(self) -> list[str]:
        return [feature.feature for feature in self.features if feature.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "thresholds": {"psi": self.thresholds.psi, "p_value": self.thresholds.pvalue},
            "drifted": self.drifted,
            "features": [feature.to_dict() for feature in self.features],
        }


@dataclass(frozen=True)
class StoredDrift:
    """One row of ``drift_reports``."""

    model: str
    version: int
    computed_at: datetime
    window: str
    rows: int
    feature: str
    method: str
    score: float
    p_value: float | None
    drifted: bool
    details: Mapping[str, Any]


def compute_drift(
    profile: Mapping[str, Any], window: pa.Table, thresholds: Thresholds
) -> DriftReport:
    """Drift of the logged rows ``window`` (the prediction log's columns) from ``profile``, for
    each profiled feature and output; a column the window lacks counts as all missing."""
    features = tuple(
        _numeric_drift(name, entry, _numbers(window, entry), window.num_rows, thresholds)
        if entry["kind"] == "numeric"
        else _categorical_drift(
            name, entry, _categories(window, entry), window.num_rows, thresholds
        )
        for name, entry in profiled(profile)
    )
    return DriftReport(window.num_rows, features, thresholds)


def profiled(profile: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, entry) of each profiled column: the features by name, then the outputs."""
    yield from profile.get("features", {}).items()
    yield from profile.get("outputs", {}).items()


def read_window(
    home: Home, version: ModelVersion, window: Window, settings: Settings, now: datetime
) -> pa.Table:
    """The logged rows of ``version`` in ``window`` (ending ``now``), only the columns its
    profile needs, in no particular order (drift needs none); at most ``MAX_WINDOW_VALUES``
    values, the newest rows.

    A time window is first counted on its ``time`` column alone (at most as many values as rows
    it may hold, plus one): when it holds more, it starts at the newest rows' first time. Then
    the columns are read without the time order, which would cost a sort of every column."""
    profile = version.profile or {}
    columns = list(dict.fromkeys(entry["column"] for _, entry in profiled(profile)))
    cap = MAX_WINDOW_VALUES // max(len(columns), 1)
    rows = cap if window.rows is None else min(window.rows, cap)
    cipher = log_cipher(settings, home)
    if window.span is None:
        return read_predictions(
            home, version.model, version=version.version, columns=columns, cipher=cipher, limit=rows
        )
    since = now - window.span
    times = read_predictions(
        home,
        version.model,
        since=since,
        version=version.version,
        columns=["time"],
        cipher=cipher,
        limit=rows + 1,
    )
    if times.num_rows > rows:
        since = times.column("time")[1].as_py()
    return read_predictions(
        home, version.model, since=since, version=version.version, columns=columns, cipher=cipher
    )


def check_drift(
    home: Home, version: ModelVersion, window: Window, settings: Settings, now: datetime
) -> DriftReport:
    """Drift of ``version``'s logged traffic in ``window`` from its reference profile; Conflict
    when the version has none (registered before profiles, or without reference data)."""
    if version.profile is None:
        raise Conflict(
            f"{version.ref} has no reference profile (it was registered without reference "
            "data, or before Dockyard captured profiles): register it again with --reference "
            "to watch its drift"
        )
    table = read_window(home, version, window, settings, now)
    return compute_drift(version.profile, table, Thresholds.of(settings))


def store_report(
    engine: Engine,
    version: ModelVersion,
    window: Window,
    report: DriftReport,
    computed_at: datetime,
) -> None:
    """Append ``report`` to ``drift_reports``: one row per feature and output."""
    rows = [
        {
            "model": version.model,
            "version": version.version,
            "computed_at": computed_at,
            "window": window.text,
            "rows": report.rows,
            "feature": feature.feature,
            "method": feature.method,
            "score": feature.psi,
            "p_value": feature.p_value,
            "drifted": feature.drifted,
            "details": feature.details(),
        }
        for feature in report.features
    ]
    if not rows:
        return
    with database_errors(engine), write_transaction(engine) as connection:
        connection.execute(insert(drift_reports), rows)


def latest_drift(engine: Engine, model: str, version: int | None = None) -> list[StoredDrift]:
    """The rows of ``model``'s (``version``'s) latest drift computation, in feature order; none
    when drift was never computed."""
    match = drift_reports.c.model == model
    if version is not None:
        match &= drift_reports.c.version == version
    latest = select(func.max(drift_reports.c.computed_at)).where(match).scalar_subquery()
    query = (
        select(drift_reports)
        .where(match, drift_reports.c.computed_at == latest)
        .order_by(drift_reports.c.id)
    )
    with database_errors(engine), engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        StoredDrift(
            model=row.model,
            version=row.version,
            computed_at=row.computed_at,
            window=row.window,
            rows=row.rows,
            feature=row.feature,
            method=row.method,
            score=row.score,
            p_value=row.p_value,
            drifted=row.drifted,
            details=row.details,
        )
        for row in rows
    ]


def drift_now(
    home: Home,
    store: RegistryStore,
    settings: Settings,
    version: ModelVersion,
    window: str | None = None,
) -> dict[str, Any]:
    """Drift of ``version`` over ``window`` (default: the ``drift_window`` setting), computed now
    and stored when the window holds rows: what ``dockyard monitor drift`` and
    ``GET /api/models/{name}/drift`` answer, as JSON."""
    span = Window.parse(window or settings.drift_window)
    now = datetime.now(UTC)
    report = check_drift(home, version, span, settings, now)
    if report.rows:
        store_report(store.engine, version, span, report, now)
    return {
        "model": version.model,
        "version": version.version,
        "window": span.text,
        "computed_at": now.isoformat(),
        **report.to_dict(),
    }


def run_drift_once(
    home: Home, store: RegistryStore, settings: Settings, versions: Sequence[ModelVersion]
) -> dict[str, DriftReport]:
    """The server's periodic job: drift of each served version over ``drift_window`` (its newest
    ``drift_max_rows`` at most: a round every minute must stay cheap), stored.
    A version without a profile or without logged rows in the window is passed over; one that
    fails is logged and the others still run. Returns the reports stored, by version ref."""
    window = Window.parse(settings.drift_window).capped(settings.drift_max_rows)
    now = datetime.now(UTC)
    reports: dict[str, DriftReport] = {}
    for version in {v.ref: v for v in versions if v.profile is not None}.values():
        try:
            report = check_drift(home, version, window, settings, now)
            if not report.rows:
                continue
            store_report(store.engine, version, window, report, now)
        except DockyardError as exc:
            logger.warning("drift of %s not computed: %s", version.ref, exc)
            continue
        except Exception:
            logger.exception("drift of %s not computed", version.ref)
            continue
        reports[version.ref] = report
    return reports


def _numbers(window: pa.Table, entry: Mapping[str, Any]) -> np.ndarray:
    """The entry's live values as float64, those present only (no null, NaN or infinity), sorted;
    none when the window has no such column, or one that does not hold numbers."""
    column = _column(window, entry)
    if column is None:
        return np.empty(0)
    if pa.types.is_floating(column.type):
        values = column.to_numpy().astype(np.float64, copy=False)  # nulls come as NaN
    elif pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
        values = numeric_values(column.to_numpy())
    else:
        return np.empty(0)
    present: np.ndarray = values[np.isfinite(values)]
    present.sort()
    return present


def _categories(window: pa.Table, entry: Mapping[str, Any]) -> dict[str, int]:
    """The entry's live category counts, missing values left out."""
    column = _column(window, entry)
    counts: dict[str, int] = {}
    if column is not None and len(column):
        found = pc.value_counts(column)
        values = found.field("values").to_pylist()
        for value, count in zip(values, found.field("counts").to_pylist(), strict=True):
            text = category_text(value)
            if text is not None:
                counts[text] = counts.get(text, 0) + count
    return counts


def _column(window: pa.Table, entry: Mapping[str, Any]) -> pa.ChunkedArray | None:
    """The entry's column of the window; an element of a list column (a classifier's
    probabilities) as a column of its own. None when the window has no such column."""
    name = entry["column"]
    if name not in window.column_names:
        return None
    column = window.column(name)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        index = entry.get("index") or 0
        # Rows whose list is null or too short are left out: they count as missing.
        column = pc.list_flatten(pc.list_slice(column, index, index + 1))
    return column


def _numeric_drift(
    name: str, entry: Mapping[str, Any], present: np.ndarray, logged: int, thresholds: Thresholds
) -> FeatureDrift:
    """``present``: the live values, sorted; ``logged``: the rows of the window."""
    n = len(present)
    sample = np.asarray(entry["sample"], dtype=np.float64)
    missing = _share(logged - n, logged)
    if not n or not len(sample):
        return _untested(name, entry, "ks", n, missing)
    edges = np.asarray(entry["edges"], dtype=np.float64)
    below = np.searchsorted(present, edges, side="left")
    live_counts = np.diff(np.concatenate(([0], below, [n])))
    psi = _psi(*_pooled(np.asarray(entry["counts"], dtype=np.float64), live_counts))
    statistic = _ks_distance(present, sample)
    m = len(sample)
    p_value = float(np.clip(stats.kstwo.sf(statistic, round(n * m / (n + m))), 0.0, 1.0))
    outside = (
        np.searchsorted(present, entry["min"], "left")
        + n
        - np.searchsorted(present, entry["max"], "right")
    )
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test="ks",
        psi=psi,
        statistic=statistic,
        p_value=p_value,
        drifted=psi > thresholds.psi or p_value < thresholds.pvalue,
        values=n,
        missing=missing,
        reference_missing=entry["missing"],
        out_of_range=_share(int(outside), n),
        unseen=None,
    )


def _ks_distance(present: np.ndarray, sample: np.ndarray) -> float:
    """The two-sample KS statistic of the sorted live values and the sorted reference sample.

    Both empirical CDFs are step functions that move only at data points; between two distinct
    sample values the sample's CDF is flat and the live CDF only rises, so the largest gap is
    found just below or at a sample value. Evaluating both CDFs there (binary searches of the
    sample's distinct values in the live values) gives the exact statistic."""
    points = np.unique(sample)
    n, m = len(present), len(sample)
    live_at = np.searchsorted(present, points, side="right") / n
    live_below = np.searchsorted(present, points, side="left") / n
    reference_at = np.searchsorted(sample, points, side="right") / m
    reference_below = np.searchsorted(sample, points, side="left") / m
    return float(
        max(np.abs(live_at - reference_at).max(), np.abs(live_below - reference_below).max())
    )


def _categorical_drift(
    name: str, entry: Mapping[str, Any], counts: dict[str, int], logged: int, thresholds: Thresholds
) -> FeatureDrift:
    """``counts``: the live values' categories; ``logged``: the rows of the window."""
    n = sum(counts.values())
    missing = _share(logged - n, logged)
    listed: list[str] = entry["values"]
    if not n or not sum(entry["counts"]) + entry["other"]:
        return _untested(name, entry, "chi2", n, missing)
    known = set(listed)
    live_counts = [counts.get(value, 0) for value in listed]
    rest = n - sum(live_counts)
    reference, observed = _pooled(
        np.asarray([*entry["counts"], entry["other"]], dtype=np.float64),
        np.asarray([*live_counts, rest], dtype=np.float64),
    )
    psi, statistic, p_value = _psi(reference, observed), 0.0, None
    if len(reference) > 1:
        # Two samples, as KS: a small reference is not taken for the truth.
        test = stats.chi2_contingency(np.vstack([reference, observed]), correction=False)
        statistic, p_value = float(test.statistic), float(test.pvalue)
    complete = entry["other"] == 0
    unseen = sorted(
        ((count, value) for value, count in counts.items() if value not in known), reverse=True
    )
    return FeatureDrift(
        feature=name,
        kind="categorical",
        test="chi2",
        psi=psi,
        statistic=statistic,
        p_value=p_value,
        drifted=psi > thresholds.psi or (p_value is not None and p_value < thresholds.pvalue),
        values=n,
        missing=missing,
        reference_missing=entry["missing"],
        out_of_range=None,
        unseen=_share(rest, n) if complete else None,
        unseen_examples=tuple(value for _, value in unseen[:UNSEEN_EXAMPLES]) if complete else (),
    )


def _pooled(reference: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``reference`` and ``live`` counts over the same buckets, after pooling the buckets that
    expect fewer than ``MIN_EXPECTED`` values of the smaller sample (the smallest first, until
    the pool expects that many)."""
    expected = reference / reference.sum() * min(live.sum(), reference.sum())
    pooled = int((expected < MIN_EXPECTED).sum())
    if not pooled:
        return reference, live
    order = np.argsort(expected, kind="stable")
    cumulative = np.cumsum(expected[order])
    while pooled < len(order) and cumulative[pooled - 1] < MIN_EXPECTED:
        pooled += 1
    kept, small = order[pooled:], order[:pooled]
    return (
        np.append(reference[kept], reference[small].sum()),
        np.append(live[kept], live[small].sum()),
    )


def _psi(reference: np.ndarray, live: np.ndarray) -> float:
    """The population stability index of pooled buckets (0 for a single bucket)."""
    p = np.maximum(live / live.sum(), EPSILON)
    q = np.maximum(reference / reference.sum(), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def _untested(
    name: str, entry: Mapping[str, Any], test: str, n: int, missing: float
) -> FeatureDrift:
    """A column with nothing to compare: no live values, or a reference without any."""
    return FeatureDrift(
        feature=name,
        kind=entry["kind"],
        test=test,
        psi=0.0,
        statistic=0.0,
        p_value=None,
        drifted=False,
        values=n,
        missing=missing,
        reference_missing=entry["missing"],
        out_of_range=None,
        unseen=None,
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
