"""``dockyard monitor alerts``: the open alerts (``--all``: resolved ones too), from the local home
or (``--url``) a server's ``GET /api/alerts``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from dockyard.cli.options import HomeOption, JsonListOption, LimitOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client


def alerts(
    everything: Annotated[
        bool, typer.Option("--all", help="Resolved alerts too, not only the open ones.")
    ] = False,
    limit: LimitOption = 1000,
    as_json: JsonListOption = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Show alerts, newest first: the rules of [alerts.NAME] in dockyard.toml that fire, as the
    server's monitoring evaluates them every drift_interval_s."""
    if url:
        with remote_client(url, home) as client:
            found = client.alerts(everything=everything, limit=limit)
    else:
        from dockyard.monitoring.alerts import list_alerts

        store = open_workspace(home).store
        found = [
            alert.to_dict()
            for alert in list_alerts(store.engine, everything=everything, limit=limit)
        ]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no alerts" if everything else "no open alerts", err=True)
        return
    _print_table(found, everything)


def _print_table(found: list[dict[str, Any]], everything: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("state", no_wrap=True, min_width=8)
    table.add_column("rule", overflow="fold")
    table.add_column("model", overflow="fold")
    table.add_column("value", no_wrap=True)
    table.add_column("fired (UTC)", no_wrap=True)
    if everything:
        table.add_column("resolved (UTC)", no_wrap=True)
    table.add_column("message", overflow="fold")
    for alert in found:
        value = alert["value"]
        cells = [
            alert["state"],
            alert["rule"],
            alert["model"] or "-",
            "-" if value is None else f"{value:.4g}",
            _when(alert["fired_at"]),
        ]
        if everything:
            cells.append(_when(alert["resolved_at"]) if alert["resolved_at"] else "-")
        table.add_row(*cells, alert["message"])
    Console().print(table)


def _when(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
