"""``dockyard predict``: offline batch scoring of a CSV or JSON file with a registered model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.services.datafiles import read_columns, write_outputs
from dockyard.services.predict import load_model


def predict(
    model: Annotated[str, typer.Argument(help="NAME[@ALIAS|:VERSION]")],
    input_file: Annotated[
        Path, typer.Option("--input", "-i", help="Rows to score (.csv, .json, .npy).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write (.csv or .json; default stdout CSV)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Score a file offline with a registered model."""
    loaded = load_model(open_workspace(home), model)
    columns = read_columns(input_file)
    total = len(next(iter(columns.values()))) if columns else 0
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("rows", total=total)
        outputs = loaded.predict_in_chunks(columns, lambda rows: progress.advance(task, rows))
    write_outputs(outputs, output)
    if output is not None:
        typer.echo(f"wrote {total} predictions of {loaded.version.ref} to {output}", err=True)
