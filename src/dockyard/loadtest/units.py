"""Quantities the load-test commands read from their command line: rate lists, connection counts,
durations, latency limits and throughputs, each with its unit. A malformed one is InvalidInput
naming the option and an example, so the CLI answers one line and exit code 2."""

from __future__ import annotations

import re

from dockyard.errors import InvalidInput

QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z/]*)\s*$")
SECONDS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0}
PER_SECOND = {"": 1.0, "rps": 1.0, "/s": 1.0, "req/s": 1.0, "/min": 1 / 60, "rpm": 1 / 60}


def _number_and_unit(text: str, option: str, example: str) -> tuple[float, str]:
    match = QUANTITY.match(text)
    if match is None:
        raise InvalidInput(f"{option} {text!r} is not a quantity; write it like {example}")
    return float(match[1]), match[2].lower()


def parse_seconds(text: str, option: str = "--duration") -> float:
    """``10s``, ``500ms``, ``2m`` or a plain number of seconds, as seconds (positive)."""
    value, unit = _number_and_unit(text, option, "10s or 500ms")
    if unit not in SECONDS or value <= 0:
        raise InvalidInput(f"{option} {text!r} must be a positive time such as 10s or 500ms")
    return value * SECONDS[unit]


def parse_latency_ms(text: str, option: str = "--p99") -> float:
    """``50ms``, ``0.05s`` or a plain number of milliseconds, as milliseconds (positive)."""
    value, unit = _number_and_unit(text, option, "50ms")
    if unit == "":
        unit = "ms"
    if unit not in SECONDS or value <= 0:
        raise InvalidInput(f"{option} {text!r} must be a positive latency such as 50ms or 0.2s")
    return value * SECONDS[unit] * 1000


def parse_rate(text: str, option: str = "--target") -> float:
    """``2000rps``, ``2000/s``, ``120000/min`` or a plain number, as requests per second."""
    value, unit = _number_and_unit(text, option, "2000rps")
    if unit not in PER_SECOND or value <= 0:
        raise InvalidInput(f"{option} {text!r} must be a positive rate such as 2000rps or 2000/s")
    return value * PER_SECOND[unit]


def parse_rates(text: str, option: str = "--rates") -> list[float]:
    """``50,100,200,400``: offered rates in requests per second, each positive."""
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidInput(f"{option} {text!r} must list rates such as 50,100,200,400")
    return [parse_rate(item, option) for item in items]


def parse_counts(text: str, option: str = "--connections") -> list[int]:
    """``1,8,64``: concurrent clients per stage, each a positive whole number."""
    counts: list[int] = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            count = int(item)
        except ValueError:
            count = 0
        if count < 1:
            raise InvalidInput(f"{option} {text!r} must list whole numbers such as 1,8,64")
        counts.append(count)
    if not counts:
        raise InvalidInput(f"{option} {text!r} must list whole numbers such as 1,8,64")
    return counts
