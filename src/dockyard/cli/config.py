"""``dockyard config show``: every setting with its value and where it came from."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli.options import HomeOption, settings_from
from dockyard.config import setting_names

app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@app.command("show")
def show(home: HomeOption = None) -> None:
    """Print each setting, its value (secrets masked) and its source."""
    settings = settings_from(home=home)
    table = Table("setting", "value", "source")
    for name in setting_names():
        table.add_row(name, settings.shown_value(name), settings.sources[name])
    Console().print(table)
