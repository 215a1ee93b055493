"""``dockyard rollout start|status|promote|abort``: canary and shadow rollouts of a version."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.errors import InvalidInput

if TYPE_CHECKING:
    from dockyard.registry.records import Rollout

app = typer.Typer(
    help="Canary and shadow rollouts: start, status, promote, abort.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(help="The model.")]
CommentOption = Annotated[str, typer.Option("--comment", help="Why (kept in the audit trail).")]


@app.command("start")
def start(
    name: NameArgument,
    version: Annotated[int, typer.Option("--version", help="The candidate version.")],
    canary: Annotated[
        int | None, typer.Option("--canary", help="Percent of requests for the candidate, 1-99.")
    ] = None,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Mirror every request; never answer with it.")
    ] = False,
    sticky: Annotated[
        str | None,
        typer.Option("--sticky", help="Canary: one value of this input or parameter, one arm."),
    ] = None,
    alias: Annotated[
        str, typer.Option("--alias", help="The alias whose version is the stable one.")
    ] = "production",
    home: HomeOption = None,
) -> None:
    """Roll a version out beside the one the alias points at: a canary share of the requests
    that name no version, or a shadow of all of them. Rolled back automatically when it crosses
    the rollout_* limits while a server runs."""
    from dockyard.security.principals import local_user
    from dockyard.services import rollouts

    if shadow == (canary is not None):
        raise InvalidInput("give one of --canary PERCENT or --shadow")
    started = rollouts.start_rollout(
        open_workspace(home),
        local_user(),
        name,
        version,
        mode="shadow" if shadow else "canary",
        percent=canary,
        sticky=sticky,
        alias=alias,
    )
    typer.echo(f"rollout {started.id} started: {_describe(started)}")


@app.command("status")
def status(
    name: NameArgument,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    home: HomeOption = None,
) -> None:
    """The model's active rollout, else its latest."""
    from dockyard.services import rollouts

    found = rollouts.rollout_status(open_workspace(home), name)
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    typer.echo(f"rollout {found.id}: {found.state}, {_describe(found)}")
    if not found.is_active:
        typer.echo(f"ended by {found.ended_by}: {found.reason or '(no reason given)'}")


@app.command("promote")
def promote(name: NameArgument, comment: CommentOption = "", home: HomeOption = None) -> None:
    """Point the alias at the candidate and end the rollout; a protected alias first needs its
    four-eyes promotion request approved (this files it)."""
    from dockyard.security.principals import local_user
    from dockyard.services import rollouts

    outcome = rollouts.promote_rollout(open_workspace(home), local_user(), name, comment)
    done = outcome.rollout
    if outcome.promotion is not None:
        request = outcome.promotion
        typer.echo(
            f"@{done.alias} is protected: promotion {request.id} of {name}:{done.candidate} "
            f"requested, pending an approver (dockyard approvals approve {request.id}); then run "
            f"dockyard rollout promote {name} again"
        )
        return
    typer.echo(f"rollout {done.id} promoted: {name}@{done.alias} → {name}:{done.candidate}")


@app.command("abort")
def abort(name: NameArgument, comment: CommentOption = "", home: HomeOption = None) -> None:
    """End the rollout: the stable version keeps serving every request."""
    from dockyard.security.principals import local_user
    from dockyard.services import rollouts

    ended = rollouts.abort_rollout(open_workspace(home), local_user(), name, comment)
    typer.echo(f"rollout {ended.id} aborted: {name}@{ended.alias} stays on {ended.stable}")


def _describe(rollout: Rollout) -> str:
    arms = f"{rollout.model}:{rollout.candidate} beside {rollout.model}:{rollout.stable}"
    if rollout.mode == "shadow":
        return f"shadow of every request, {arms} (@{rollout.alias})"
    sticky = f", sticky on {rollout.sticky}" if rollout.sticky else ""
    return f"canary {rollout.percent}% to {arms} (@{rollout.alias}){sticky}"
