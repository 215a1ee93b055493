"""``dockyard monitor``: the prediction log, drift, delayed labels, alerts and exports for
Prometheus and Grafana. Each command lives in its own module and is registered here."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Prediction log, drift, labels, alerts and dashboards.", no_args_is_help=True
)
