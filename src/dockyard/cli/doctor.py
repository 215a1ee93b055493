"""``dockyard doctor``: check a home for what a crash or a lost file left behind."""

from __future__ import annotations

from dockyard.cli.options import HomeOption


def doctor(home: HomeOption = None) -> None:
    """Check a home: registry, artifacts, audit chain, prediction log; say what to repair."""
