"""``dockyard config``: every setting with its value and where it came from; sealed secrets."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, settings_from
from dockyard.config import seal_setting, setting_names

app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@app.command("show")
def show(home: HomeOption = None) -> None:
    """Print each setting, its value (secrets masked) and its source."""
    from rich.console import Console
    from rich.table import Table

    settings = settings_from(home=home)
    table = Table("setting", "value", "source")
    for name in setting_names():
        table.add_row(name, settings.shown_value(name), settings.sources[name])
    Console().print(table)


@app.command("set-secret")
def set_secret(
    name: Annotated[
        str, typer.Argument(help="database_url, api_key_secret or alert_webhook_secret.")
    ],
    home: HomeOption = None,
) -> None:
    """Store a secret setting encrypted in the home (read from stdin or a hidden prompt)."""
    value = typer.prompt(f"{name}", hide_input=True)
    path = seal_setting(settings_from(home=home), name, value)
    typer.echo(f"sealed {name} in {path}")
