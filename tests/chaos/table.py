"""The chaos suite's table: every scenario records sent / succeeded / failed clearly / lost as a
property of its test's report, and the run prints them together at its end
(``docs/reliability.md`` shows one). Report properties travel from pytest-xdist's worker processes
to the one that prints, so the table is whole however the suite was run; the hooks that collect and
print live in ``tests/conftest.py``, which every pytest process loads."""

from __future__ import annotations

import pytest

PROPERTY = "chaos-row"
HEADER = ("scenario", "sent", "succeeded", "failed clearly", "lost")
Row = tuple[str, int, int, int, int]


def rows_of(report: pytest.TestReport) -> list[Row]:
    """The rows a scenario's test recorded (none for other tests)."""
    if report.when != "call":
        return []
    return [tuple(value) for name, value in report.user_properties if name == PROPERTY]


def print_table(terminalreporter: pytest.TerminalReporter, rows: list[Row]) -> None:
    if not rows:
        return
    terminalreporter.section("chaos suite")
    widths = [max(len(str(row[i])) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        cells = [
            str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        terminalreporter.write_line(" | ".join(cells))
