"""``dockyard retrain``: train a challenger on a model's labelled production traffic with the
operator's own training function, register it, and compare it with the champion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace


def retrain(
    model: Annotated[str, typer.Argument(help="NAME[@ALIAS|:VERSION]: the champion.")],
    entrypoint: Annotated[
        str,
        typer.Option(
            help="module:function, imported from the current folder: "
            "fit(features, labels, reference) returns the trained model."
        ),
    ],
    window: Annotated[
        str, typer.Option(help="Train on the labelled traffic of the last 30d, 12h, …")
    ] = "30d",
    holdout: Annotated[
        float, typer.Option(help="Share of the newest labelled rows kept out to compare on.")
    ] = 0.2,
    reference: Annotated[
        Path | None,
        typer.Option(help="The original reference data, passed to fit as its third argument."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the challenger.")] = None,
    home: HomeOption = None,
) -> None:
    """Retrain a model on its logged inputs joined to their labels; register the challenger."""
    # Imported here, not at the top: every command (and --help) imports this module.
    from dockyard.security.keystore import parse_duration
    from dockyard.security.principals import local_user
    from dockyard.services.datafiles import as_reference, read_columns
    from dockyard.services.retrain import import_fit
    from dockyard.services.retrain import retrain as run

    span = parse_duration(window)
    fit = import_fit(entrypoint)
    original = None if reference is None else as_reference(read_columns(reference))[0]
    done = run(
        open_workspace(home),
        local_user(),
        model,
        fit,
        window=span,
        holdout=holdout,
        reference=original,
        alias=alias,
    )
    typer.echo(
        f"registered {done.challenger.ref} (retrained from {done.champion.ref} on "
        f"{done.train_rows} labelled rows)"
    )
    typer.echo(f"on the newest {done.holdout_rows} labelled rows, kept out of training:")
    for metric in sorted(done.champion_metrics.keys() | done.challenger_metrics.keys()):
        champion = done.champion_metrics.get(metric)
        challenger = done.challenger_metrics.get(metric)
        typer.echo(f"  {metric:<10} champion {_shown(champion)}  challenger {_shown(challenger)}")


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
