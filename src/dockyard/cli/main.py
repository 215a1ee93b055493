"""The ``dockyard`` command: sub-commands wired here, and the CLI's one error boundary."""

from __future__ import annotations

import logging
import os
import sys

import click
import typer

from dockyard import __version__
from dockyard.cli import config, deps, keys, models, predict, security, serve
from dockyard.errors import DockyardError

app = typer.Typer(
    name="dockyard",
    help="Register, serve and monitor machine-learning models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")
app.add_typer(security.app, name="security")
app.add_typer(deps.app, name="deps")
app.command("serve")(serve.serve)
app.command("predict")(predict.predict)

logger = logging.getLogger("dockyard")
USAGE_EXIT = 2


def _show(error: Exception) -> None:
    """A command-line mistake as Click shows it (usage line, then the error), else one line."""
    show = getattr(error, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"error: {error}", err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dockyard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Register, serve and monitor machine-learning models."""


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; any error becomes one line on stderr and a non-zero exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Outside standalone mode click returns a ``typer.Exit``'s code instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except DockyardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.ClickException, typer.TyperException) as exc:
        # Typer 0.2x carries its own copy of Click, whose usage errors are not click's classes:
        # both are usage errors (exit 2), shown with the usage line and naming the option.
        _show(exc)
        sys.exit(getattr(exc, "exit_code", USAGE_EXIT))
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("DOCKYARD_DEBUG"):
            raise
        logger.debug("unexpected error", exc_info=exc)
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (set DOCKYARD_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
