"""``dockyard keys``: API keys, the encryption key and signing keys."""

from __future__ import annotations

import typer

app = typer.Typer(help="API keys, encryption and signing keys.", no_args_is_help=True)
