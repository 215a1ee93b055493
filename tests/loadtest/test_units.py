"""Quantities of the load-test command line: units read, malformed ones refused with the option."""

from __future__ import annotations

import pytest

from dockyard.errors import InvalidInput
from dockyard.loadtest.units import (
    parse_counts,
    parse_latency_ms,
    parse_rate,
    parse_rates,
    parse_seconds,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5)],
    ids=["s", "ms", "m", "plain"],
)
def test_durations_read_their_unit(text: str, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "ms"), [("50ms", 50.0), ("0.2s", 200.0), ("75", 75.0)], ids=["ms", "s", "plain-ms"]
)
def test_latency_limits_are_milliseconds(text: str, ms: float) -> None:
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "rps"),
    [("2000rps", 2000.0), ("2000/s", 2000.0), ("120000/min", 2000.0), ("2000", 2000.0)],
    ids=["rps", "per-s", "per-min", "plain"],
)
def test_rates_are_per_second(text: str, rps: float) -> None:
    assert parse_rate(text) == pytest.approx(rps)


def test_lists_of_rates_and_counts() -> None:
    assert parse_rates("50,100, 200,400") == [50.0, 100.0, 200.0, 400.0]
    assert parse_counts("1,8,64") == [1, 8, 64]


@pytest.mark.parametrize(
    ("parse", "text", "option"),
    [
        (parse_seconds, "10q", "--duration"),
        (parse_seconds, "0s", "--duration"),
        (parse_latency_ms, "fast", "--p99"),
        (parse_rate, "-5rps", "--target"),
        (parse_rates, "50,,x", "--rates"),
        (parse_rates, ",", "--rates"),
        (parse_counts, "1,0", "--connections"),
        (parse_counts, "1.5", "--connections"),
    ],
    ids=["unit", "zero", "word", "negative", "rate-list", "empty", "zero-clients", "fraction"],
)
def test_malformed_quantities_name_their_option(parse: object, text: str, option: str) -> None:
    with pytest.raises(InvalidInput, match=option):
        parse(text)  # type: ignore[operator]
