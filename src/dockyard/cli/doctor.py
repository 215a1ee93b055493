"""``dockyard doctor``: check a home for what a crash or a lost file left behind."""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, settings_from
from dockyard.errors import HomeInconsistent


def doctor(
    home: HomeOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Make the safe repairs: delete what processes that are gone left behind, "
            "make secret files private.",
        ),
    ] = False,
) -> None:
    """Check a home: registry, artifacts, audit chain, prediction log, secrets; say what to
    repair. Exit 0 when healthy, else one line per problem on stderr and exit 14."""
    from dockyard.services.doctor import examine

    settings = settings_from(home=home)
    problems = examine(settings)
    if repair:
        for problem in problems:
            if problem.fix is not None:
                problem.fix()
                typer.echo(f"repaired: {problem.what}")
        problems = examine(settings)
    if not problems:
        typer.echo(f"home {settings.home} is consistent")
        return
    for problem in problems:
        typer.echo(f"problem: {problem.what}: {problem.repair}", err=True)
    raise HomeInconsistent(f"{len(problems)} problem(s) found in home {settings.home}")
