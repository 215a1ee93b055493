"""``dockyard security``: security events (auth failures, refusals, rate limits, anomalies)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, JsonListOption, LimitOption, open_workspace
from dockyard.errors import InvalidInput

app = typer.Typer(help="Security events.", no_args_is_help=True)
MAX_LIMIT = 100_000


@app.command("events")
def events_command(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events of the last 30m, 1h, 7d, … (default: all)."),
    ] = None,
    limit: LimitOption = 1000,
    as_json: JsonListOption = False,
    home: HomeOption = None,
) -> None:
    """Show security events, oldest first: auth failures, 403s, rate-limit hits and keys whose
    request rate jumped (written by servers within about a second)."""
    from rich.console import Console
    from rich.table import Table

    from dockyard.security.keystore import parse_duration

    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIMIT}")
    window = parse_duration(since) if since else None
    workspace = open_workspace(home)
    events = workspace.events.query(window, limit)
    if as_json:
        typer.echo(json.dumps([event.to_dict() for event in events], indent=2))
        return
    if not events:
        typer.echo(f"no security events{f' in the last {since}' if since else ''}", err=True)
        return
    table = Table()
    for column in ("at (UTC)", "kind", "count"):
        table.add_column(column, no_wrap=True)
    for column in ("who", "request", "client", "detail"):
        table.add_column(column, overflow="fold")
    for event in events:
        who = event.principal or "-"
        if event.key_id:
            who += f" ({event.key_id})"
        request = " ".join(str(part) for part in (event.status, event.method, event.path) if part)
        table.add_row(
            event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            event.kind,
            str(event.count),
            who,
            request or "-",
            event.client or "-",
            event.detail,
        )
    Console().print(table)
