"""``dockyard monitor drift MODEL``: drift of a model's live traffic from its reference profile,
computed now over ``--window`` and stored (the server also computes it every
``drift_interval_s``), on the local home or (``--url``) through a server's
``GET /api/models/{name}/drift``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from dockyard.cli.models import REF_HELP
from dockyard.cli.options import HomeOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client, resolve


def drift(
    model: Annotated[str, typer.Argument(help=REF_HELP)],
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            help="The newest logged traffic to compare: a time (24h, 30m, 7d) or a row count "
            "(100000rows). Default: the drift_window setting.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Compare a model's logged traffic with its reference: per feature and output, PSI and the
    KS (numbers) or chi-square (categories) p-value, drifted or not, and data quality."""
    if url:
        with remote_client(url, home) as client:
            version = resolve(client, model)
            report = client.drift(
                version["model"], window=window or None, version=version["version"]
            )
    else:
        from dockyard.monitoring.drift import drift_now

        workspace = open_workspace(home)
        found = workspace.resolve(model)
        report = drift_now(workspace.home, workspace.store, workspace.settings, found, window)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    ref = f"{report['model']}:{report['version']}"
    if not report["rows"]:
        typer.echo(f"no logged predictions of {ref} in the window {report['window']}", err=True)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    thresholds = report["thresholds"]
    table = Table(
        "feature",
        "method",
        "score",
        "p-value",
        "drifted",
        "missing",
        "out of range",
        "unseen",
        title=f"{ref}: {report['rows']} rows in the window {report['window']} "
        f"(drifted: PSI > {thresholds['psi']:g} or p < {thresholds['p_value']:g})",
    )
    for feature in report["features"]:
        table.add_row(
            Text(feature["feature"]),
            feature["method"],
            f"{feature['score']:.4f}",
            "-" if feature["p_value"] is None else f"{feature['p_value']:.3g}",
            "[bold red]yes[/bold red]" if feature["drifted"] else "no",
            f"{feature['missing']:.1%} (ref {feature['reference_missing']:.1%})",
            _share(feature["out_of_range"]),
            _share(feature["unseen"]),
        )
    Console().print(table)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
