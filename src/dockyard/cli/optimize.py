"""``dockyard optimize``: compile a registered version to a faster runtime (ONNX, Treelite),
prove it predicts the same, and register it as a new version of the same model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace

if TYPE_CHECKING:
    from dockyard.services.optimize import Optimized

TARGETS = ("auto", "onnx", "treelite", "native")


def optimize(
    ref: Annotated[str, typer.Argument(help="NAME[@ALIAS|:VERSION]: the version to convert.")],
    target: Annotated[
        str,
        typer.Option(
            help="onnx (skl2onnx, onnxmltools, torch.onnx), treelite (tree ensembles, GTIL), "
            "native (tree ensembles "
            "compiled here with tl2cgen and this machine's C compiler) or auto: try each and keep "
            "the fastest that predicts the same (geometric mean of batch 1 and the serving "
            "batch)."
        ),
    ] = "auto",
    tolerance: Annotated[
        float,
        typer.Option(
            help="Largest difference allowed in any output on any row (relative above 1); "
            "labels must be equal."
        ),
    ] = 1e-6,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias at the optimized version.")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Rows to prove it on (.csv, .json, .parquet or .npy); default: rows rebuilt "
            "from the version's reference profile. Edge rows are added either way."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="The serving batch size it is timed at (default: max_batch_size)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Convert a version to a faster runtime, prove it answers the same, register it."""
    # Imported here, not at the top: every command (and --help) imports this module.
    from dockyard.errors import InvalidInput
    from dockyard.security.principals import local_user
    from dockyard.services.datafiles import as_reference, read_columns
    from dockyard.services.optimize import Optimization
    from dockyard.services.optimize import optimize as run

    if target not in TARGETS:
        raise InvalidInput(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    rows = None if reference is None else as_reference(read_columns(reference))[0]
    done = run(
        open_workspace(home),
        Optimization(
            ref,
            target=target,
            tolerance=tolerance,
            alias=alias,
            reference_data=rows,
            batch_size=batch_size,
        ),
        local_user(),
    )
    if as_json:
        typer.echo(json.dumps(_as_data(done), indent=2))
        return
    _print(done)


def _print(done: Optimized) -> None:
    from dockyard.optimize.attempts import named

    record = done.version.lineage.optimization or {}
    speedup = record.get("speedup", {})
    batch = done.source_latency.batch
    typer.echo(
        f"registered {done.version.ref} ({done.version.framework}, from {done.source.ref} by "
        f"{done.chosen.converter} {done.chosen.converter_version})"
    )
    typer.echo(
        f"  max error {record.get('max_error', 0.0):.3g} on {record.get('rows_checked')} rows "
        f"(tolerance {record.get('tolerance')})"
    )
    for key in ("1", str(batch)):
        before = done.source_latency.to_dict()[key]
        after = record["latency_ms"]["optimized"][key]
        typer.echo(f"  batch {key:>4}: {before:.3f} ms -> {after:.3f} ms  (x{speedup.get(key)})")
    for attempt in done.attempts:
        if attempt.reason is not None:
            typer.echo(f"  not used: {named(attempt)}")
        elif attempt is not done.chosen:
            typer.echo(f"  {attempt.converter}: passed, slower")
    if done.version.aliases:
        typer.echo(f"  aliases: {', '.join(done.version.aliases)}")


def _as_data(done: Optimized) -> dict[str, object]:
    return {
        "version": done.version.to_dict(),
        "attempts": [
            {
                "converter": attempt.converter,
                "target": attempt.target,
                "converter_version": attempt.converter_version,
                "passed": attempt.passed,
                "chosen": attempt is done.chosen,
                "reason": attempt.reason,
                "max_error": None if attempt.comparison is None else attempt.comparison.max_error,
                "latency_ms": None if attempt.latency is None else attempt.latency.to_dict(),
            }
            for attempt in done.attempts
        ],
    }
