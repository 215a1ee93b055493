"""``dockyard predict``: offline batch scoring of a CSV or JSON file with a registered model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace

if TYPE_CHECKING:
    import numpy as np

    from dockyard.services.predict import LoadedModel


def predict(
    model: Annotated[str, typer.Argument(help="NAME[@ALIAS|:VERSION]")],
    input_file: Annotated[
        Path, typer.Option("--input", "-i", help="Rows to score (.csv, .json, .parquet, .npy).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Where to write (.csv, .json or .parquet; default stdout CSV)."
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Score a file offline with a registered model."""
    # Imported here, not at the top: every command (and --help) imports this module.
    from dockyard.services.datafiles import check_output, read_columns, write_outputs
    from dockyard.services.predict import load_model

    if output is not None:
        check_output(output)  # before the model loads (seconds), not after it has scored
    loaded = load_model(open_workspace(home), model)
    columns = read_columns(input_file)
    total = len(next(iter(columns.values()))) if columns else 0
    if sys.stderr.isatty():
        outputs = _score_with_progress(loaded, columns, total)
    else:
        outputs = loaded.predict_in_chunks(columns)
    write_outputs(outputs, output)
    if output is not None:
        typer.echo(f"wrote {total} predictions of {loaded.version.ref} to {output}", err=True)


def _score_with_progress(
    loaded: LoadedModel, columns: dict[str, np.ndarray], total: int
) -> dict[str, np.ndarray]:
    """Score with a progress bar on the terminal (gone once done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
        task = bar.add_task("rows", total=total)
        return loaded.predict_in_chunks(columns, lambda rows: bar.advance(task, rows))
