"""What trying one converter found, how a refusal names every attempt, and what the lineage of
the version kept records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockyard.optimize.equivalence import Comparison
from dockyard.optimize.timing import Latency


@dataclass(frozen=True)
class Attempt:
    """One converter's try: refused (``reason``), or converted, compared and timed."""

    converter: str
    target: str
    converter_version: str | None = None
    reason: str | None = None
    comparison: Comparison | None = None
    latency: Latency | None = None
    worst_input: Any = None
    worst_kind: str | None = None

    @property
    def passed(self) -> bool:
        return self.reason is None

    def speedup(self, source: Latency) -> dict[str, float]:
        """The source's time over this one's, at batch 1 and at the serving batch."""
        assert self.latency is not None
        return {
            key: _ratio(source.to_dict()[key], value)
            for key, value in self.latency.to_dict().items()
        }


def refusal(ref: str, attempts: list[Attempt]) -> str:
    """The one line a refused optimization prints: each converter's reason."""
    reasons = "; ".join(named(attempt) for attempt in attempts)
    return f"{ref} was not optimized, nothing was registered: {reasons}"


def named(attempt: Attempt) -> str:
    """An attempt's reason led by its converter's name (once: most reasons start with it)."""
    reason = attempt.reason or "passed"
    return reason if reason.startswith(attempt.converter) else f"{attempt.converter}: {reason}"


def difference(attempt_comparison: Comparison, tolerance: float, kind: str, row: Any) -> str:
    """Why a converted model's outputs were refused, naming the worst row."""
    comparison = attempt_comparison
    if comparison.mismatch is not None:
        where = f" ({kind} row {row})" if comparison.worst_row is not None else ""
        return f"predicts differently: {comparison.mismatch}{where}"
    return (
        f"predicts differently: output {comparison.worst_output!r} is off by "
        f"{comparison.max_error:.3g} (tolerance {tolerance:g}) on the {kind} row {row}"
    )


def lineage_record(
    source_ref: str, chosen: Attempt, tolerance: float, rows: int, source: Latency
) -> dict[str, Any]:
    """The ``optimization`` entry of the new version's lineage."""
    assert chosen.comparison is not None
    assert chosen.latency is not None
    return {
        "source": source_ref,
        "target": chosen.target,
        "converter": chosen.converter,
        "converter_version": chosen.converter_version,
        "tolerance": tolerance,
        "max_error": chosen.comparison.max_error,
        "rows_checked": rows,
        "latency_ms": {"source": source.to_dict(), "optimized": chosen.latency.to_dict()},
        "speedup": chosen.speedup(source),
    }


def _ratio(before: float, after: float) -> float:
    return round(before / max(after, 1e-9), 2)
