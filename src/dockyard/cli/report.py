"""PLACEHOLDER (issue 12): ``dockyard report``."""

from __future__ import annotations


def report() -> None:
    """Write a model's compliance report (HTML or JSON)."""
