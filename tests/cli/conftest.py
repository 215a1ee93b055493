"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.services.register import Registration, register
from homes import open_unprotected


@pytest.fixture
def registered(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    """A home holding ``lr`` version 1 (a logistic regression with 20 reference rows)."""
    register(
        open_unprotected(home), logistic, Registration("lr", reference_data=tabular_data[0][:20])
    )
    return home
