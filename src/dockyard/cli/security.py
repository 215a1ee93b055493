"""``dockyard security``: security events (auth failures, refusals, rate limits, anomalies)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Security events.", no_args_is_help=True)
