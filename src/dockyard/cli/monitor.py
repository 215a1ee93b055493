"""``dockyard monitor``: the prediction log, drift, delayed labels, alerts and exports for
Prometheus and Grafana. Each command lives in its own module and is registered here."""

from __future__ import annotations

import typer

from dockyard.cli import monitor_alerts, monitor_drift, monitor_export, monitor_log

app = typer.Typer(
    help="Prediction log, drift, labels, alerts and dashboards.", no_args_is_help=True
)
app.command("alerts")(monitor_alerts.alerts)
app.command("drift")(monitor_drift.drift)
app.add_typer(monitor_export.app, name="export")
app.command("log")(monitor_log.log)
app.command("feedback")(monitor_log.feedback)
app.command("evaluate")(monitor_log.evaluate)
