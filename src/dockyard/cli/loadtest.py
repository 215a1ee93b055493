"""``dockyard loadtest URL --model M``: open-loop (or closed-loop) load against any V2 server,
stage by stage until past saturation; a table, a JSON report and a latency/throughput chart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.remote import API_KEY_ENV
from dockyard.errors import InvalidInput

DEFAULT_RATES = "50,100,200,400"
DEFAULT_OUT = Path("loadtest")


def loadtest(
    url: Annotated[str, typer.Argument(help="The V2 server, such as http://127.0.0.1:8000.")],
    model: Annotated[str, typer.Option("--model", help="The model to load.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help=f"API key (default: ${API_KEY_ENV}; none for an open server).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="The model version (default: the server's).")
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            "--rates",
            help=f"Open loop: arrival rates in req/s, one stage each (default {DEFAULT_RATES}).",
        ),
    ] = None,
    connections: Annotated[
        str | None,
        typer.Option(
            "--connections",
            help="Closed loop instead: concurrent clients per stage, such as 1,8,64.",
        ),
    ] = None,
    duration: Annotated[str, typer.Option("--duration", help="Length of each stage.")] = "10s",
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Request bodies: a V2 JSON request body, or rows of a .npy or .csv file "
            "(default: the server's reference profile, else made up from the V2 metadata).",
        ),
    ] = None,
    rows: Annotated[int, typer.Option("--rows", help="Rows per request.", min=1)] = 1,
    timeout: Annotated[str, typer.Option("--timeout", help="Per-request time limit.")] = "5s",
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight",
            help="Open loop: most requests in flight; past it a send is dropped as an error.",
            min=1,
        ),
    ] = 256,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for loadtest.json and loadtest.png.")
    ] = DEFAULT_OUT,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of the table.")
    ] = False,
) -> None:
    """Load a model on a V2 server stage by stage (open loop: latency counted from each request's
    scheduled time) until a stage is past saturation; write loadtest.json and loadtest.png."""
    from rich.console import Console

    from dockyard.loadtest.chart import draw
    from dockyard.loadtest.connections import encode_requests
    from dockyard.loadtest.progress import LiveDisplay
    from dockyard.loadtest.report import LoadReport
    from dockyard.loadtest.runner import CLOSED, OPEN, Load, run_async, run_stages
    from dockyard.loadtest.sources import choose_bodies
    from dockyard.loadtest.target import Target
    from dockyard.loadtest.units import parse_counts, parse_rates, parse_seconds

    if rates is not None and connections is not None:
        raise InvalidInput("give --rates (open loop) or --connections (closed loop), not both")
    levels: list[float]
    if connections is not None:
        mode, levels = CLOSED, [float(count) for count in parse_counts(connections)]
    else:
        mode, levels = OPEN, parse_rates(rates or DEFAULT_RATES)
    load = Load(mode, parse_seconds(duration), parse_seconds(timeout, "--timeout"), max_in_flight)
    target = Target(url.rstrip("/"), model, version, key or os.environ.get(API_KEY_ENV) or None)
    bodies, source = choose_bodies(target, input_file, rows)
    requests = encode_requests(target, bodies)
    console = Console(stderr=True)
    with LiveDisplay(console) as display:
        stages = run_async(lambda: run_stages(target, requests, load, levels, display))
    report = LoadReport(target, source, rows, load, stages)
    json_path = report.write_json(out / "loadtest.json")
    chart_path = draw(stages, out / "loadtest.png", f"{target.describe()}, {mode} loop")
    if json_output:
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        report.print_table(Console())
        typer.echo(f"wrote {json_path} and {chart_path}")
