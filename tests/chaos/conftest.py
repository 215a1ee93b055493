"""The chaos suite's ``record`` fixture (the table it feeds: ``chaos/table.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos.table import PROPERTY
from chaos.traffic import Tally


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[str, Tally], None]:
    """Record one scenario's tally for the table (call it before asserting on the tally)."""
    return lambda scenario, tally: request.node.user_properties.append(
        (PROPERTY, tally.row(scenario))
    )
