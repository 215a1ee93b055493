"""``dockyard backup create|verify|restore``: consistent snapshots of a home and their restore."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Backups of a home: create, verify, restore onto a new home.", no_args_is_help=True
)
