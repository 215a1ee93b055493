"""The chaos suite's table: every scenario records sent / succeeded / failed clearly / lost, and
the run prints them together at its end (``docs/reliability.md`` shows one)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos.traffic import Tally

ROWS = pytest.StashKey[list[tuple[str, int, int, int, int]]]()
HEADER = ("scenario", "sent", "succeeded", "failed clearly", "lost")


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[str, Tally], None]:
    """Record one scenario's tally for the table (call it before asserting on the tally)."""
    rows = request.config.stash.setdefault(ROWS, [])
    return lambda scenario, tally: rows.append(tally.row(scenario))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(ROWS, [])
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
