"""``dockyard data erase``: remove every logged record of one data subject from the home (the
right to erasure), as the local user; the audit trail records it without the value. The service
(and its wait for running servers' log writers) is imported when the command runs. With
``prediction_log_url`` set, the erasure is mirrored to the bucket before the command returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace

if TYPE_CHECKING:
    from dockyard.services.workspace import Workspace

app = typer.Typer(help="The logged data: erase a data subject's records.", no_args_is_help=True)


@app.command("erase")
def erase(
    subject: Annotated[
        str,
        typer.Option(
            "--subject",
            help="FEATURE=VALUE: the model input and the value that identify the person "
            "(email=ann@example.com, customer_id=C-1042).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model's log (default: every model's).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking first.")] = False,
    home: HomeOption = None,
) -> None:
    """Erase every logged prediction whose input FEATURE holds VALUE, the labels sent for them
    and the value where drift reports quote it. Waits one log flush first, so the requests a
    running server answered before now are written and erased too."""
    from dockyard.security.principals import local_user
    from dockyard.services.erasure import erase_subject

    feature, sep, value = subject.partition("=")
    if not sep or not feature or not value:
        raise typer.BadParameter(
            f"--subject {subject!r} must look like FEATURE=VALUE, such as email=ann@example.com"
        )
    scope = f"{model}'s log" if model else "the log of every model"
    if not yes:
        typer.confirm(
            f"Erase every record of {scope} whose input {feature!r} holds this value?", abort=True
        )
    workspace = open_workspace(home)
    erasure = erase_subject(workspace, local_user(), feature, value, model)
    for name, rows in erasure.rows.items():
        typer.echo(f"{name}: erased {rows} logged rows and {erasure.labels[name]} labels")
    if erasure.drift_reports:
        typer.echo(f"removed the value from {erasure.drift_reports} drift reports")
    typer.echo(f"recorded in the audit trail as data.erase of input.{feature} (without the value)")
    if workspace.settings.prediction_log_url:
        _mirror(workspace)


def _mirror(workspace: Workspace) -> None:
    """The erasure carried to this machine's copy of the log in ``prediction_log_url`` now, not
    at the server's next mirror pass."""
    from dockyard.errors import DockyardError
    from dockyard.monitoring.predlog.mirror import LogMirror

    mirror = LogMirror.from_settings(workspace.settings, workspace.home)
    try:
        done = mirror.run()
    except DockyardError as exc:  # the same error (and exit code), saying what did happen
        exc.message = (
            f"{exc.message} (erased in this home; a server's next mirror pass, every "
            f"log_ship_interval_s, erases it from {mirror.url})"
        )
        exc.args = (exc.message,)
        raise
    typer.echo(
        f"mirrored to {mirror.url}: {done.uploaded} segment(s) uploaded again, "
        f"{done.deleted} deleted"
    )
