"""The ``dockyard`` command: sub-commands wired here, and the CLI's one error boundary.

Every invocation, ``--help`` and ``--version`` included, imports this module and every command
module: they import typer, the standard library and light Dockyard modules at their top, and what a
command needs (the registry, the runtimes, HTTP clients, Rich tables, ...) inside its function.
``tests/cli/test_cli_imports.py`` fails when a heavy module creeps back into start-up.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys

import typer

from dockyard.cli import (
    audit,
    backup,
    capacity,
    config,
    data,
    deps,
    doctor,
    export,
    governance,
    keys,
    loadtest,
    models,
    monitor,
    optimize,
    predict,
    report,
    retrain,
    rollout,
    security,
    serve,
)
from dockyard.cli.options import close_opened
from dockyard.errors import DockyardError, storage_full

app = typer.Typer(
    name="dockyard",
    help="Register, serve and monitor machine-learning models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help for every command and group below (they inherit it): Rich markup would swallow
    # "[@ALIAS|:VERSION]" (a tag to Rich), and Typer's Rich panels print "<bool>" beside each flag.
    rich_markup_mode=None,
)
app.add_typer(models.app, name="models")
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")
app.add_typer(security.app, name="security")
app.add_typer(deps.app, name="deps")
app.add_typer(monitor.app, name="monitor")
app.add_typer(audit.app, name="audit")
app.add_typer(governance.policy_app, name="policy")
app.add_typer(governance.approvals_app, name="approvals")
app.add_typer(data.app, name="data")
app.add_typer(backup.app, name="backup")
app.add_typer(rollout.app, name="rollout")
app.add_typer(export.app, name="export")
app.command("serve")(serve.serve)
app.command("predict")(predict.predict)
app.command("retrain")(retrain.retrain)
app.command("optimize")(optimize.optimize)
app.command("promote")(governance.promote)
app.command("report")(report.report)
app.command("doctor")(doctor.doctor)
app.command("loadtest")(loadtest.loadtest)
app.command("capacity")(capacity.capacity)

logger = logging.getLogger("dockyard")
USAGE_EXIT = 2


def _show(error: BaseException) -> None:
    """A command-line mistake as Click shows it (usage line, then the error), else one line."""
    show = getattr(error, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"error: {error}", err=True)


def _also_click(*errors: type[BaseException], name: str) -> tuple[type[BaseException], ...]:
    """``errors`` and Click's own exception class ``name`` once something has imported Click (none
    else can have raised one). Typer 0.2x carries its own copy of Click: the CLI does not import
    Click (a fiftieth of a second) only to name its classes; older Typers import it themselves."""
    click = sys.modules.get("click")
    return errors if click is None else (*errors, getattr(click.exceptions, name))


def _version(value: bool) -> None:
    if value:
        from dockyard import __version__  # importlib.metadata: only when asked

        typer.echo(f"dockyard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Register, serve and monitor machine-learning models."""


def _exit_without_sweeping() -> None:
    """At the exit of the ``dockyard`` process: collect what the command left behind (closing its
    database connections), then freeze everything else, so that the interpreter's teardown does not
    sweep every object the command imported: a third of a second after a scikit-learn model. The
    server freezes the same way once its models are loaded."""
    gc.collect()
    gc.freeze()


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; any error becomes one line on stderr and a non-zero exit code.

    ``argv`` None: this process is the ``dockyard`` command, reading its arguments from sys.argv.
    """
    if argv is None:
        atexit.register(_exit_without_sweeping)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run(argv)
    finally:
        close_opened()  # what the command opened, whichever way it ended


def _run(argv: list[str] | None) -> None:
    """The command, its errors turned into a line on stderr and an exit code."""
    try:
        # Outside standalone mode click returns a ``typer.Exit``'s code instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except DockyardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except _also_click(typer.Exit, name="Exit") as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except _also_click(typer.TyperException, name="ClickException") as exc:
        # Typer 0.2x carries its own copy of Click, whose usage errors are not click's classes:
        # both are usage errors (exit 2), shown with the usage line and naming the option.
        _show(exc)
        sys.exit(getattr(exc, "exit_code", USAGE_EXIT))
    except _also_click(typer.Abort, KeyboardInterrupt, name="Abort"):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        if (full := storage_full(exc)) is not None:
            typer.echo(f"error: {full.message}", err=True)
            sys.exit(full.exit_code)
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


if __name__ == "__main__":  # python -m dockyard.cli.main
    run()
