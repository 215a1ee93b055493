"""PLACEHOLDER (issue 12): ``dockyard policy check``, ``promote``, ``approvals``."""

from __future__ import annotations

import typer

policy_app = typer.Typer(help="The governance policy of dockyard.toml and its gates.")
approvals_app = typer.Typer(help="Promotion requests: list, approve, reject (four eyes).")


def promote() -> None:
    """Request moving a protected alias to a version (four eyes)."""
