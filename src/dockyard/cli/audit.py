"""PLACEHOLDER (issue 12): ``dockyard audit verify|log|export``."""

from __future__ import annotations

import typer

app = typer.Typer(help="The audit trail: verify its chain, list and export its entries.")
