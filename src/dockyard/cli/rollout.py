"""``dockyard rollout start|status|promote|abort``: canary and shadow rollouts of a version."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Canary and shadow rollouts: start, status, promote, abort.", no_args_is_help=True
)
