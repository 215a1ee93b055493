"""PLACEHOLDER (issue 12): ``dockyard data erase``."""

from __future__ import annotations

import typer

app = typer.Typer(help="The logged data: erase a data subject's records.")
