"""Fixtures of the end-to-end tests that speak raw HTTP or need a home with a served model."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.services.register import Registration, register
from homes import open_unprotected
from rawhttp import Raw
from servers import Server


@pytest.fixture
def served(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    """A home with ``lr`` version 1 under the ``production`` alias."""
    workspace = open_unprotected(home)
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="production"),
    )
    return home


@pytest.fixture
def connect() -> Iterator[Callable[[Server], Raw]]:
    """Factory: a raw connection to a server; all are closed after the test."""
    opened: list[socket.socket] = []
    yield lambda server: Raw(server, opened)
    for sock in opened:
        sock.close()
