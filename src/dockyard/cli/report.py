"""``dockyard report MODEL``: a model version's compliance report — card, lineage, approvals,
policy gates, audit trail, monitoring — as one HTML file a reviewer opens offline, or as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client
from dockyard.errors import InvalidInput


def write_document(text: str, out: Path | None) -> None:
    """``text`` to the file ``out`` (saying so on stderr), or to stdout without one."""
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror}") from None
    typer.echo(f"wrote {out}", err=True)


def report(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        int | None,
        typer.Option(
            help="The version to report on (default: the production alias's, else the latest).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (default: stdout).")
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="html or json (default: json for an --out ending in .json, else html).",
            show_default=False,
        ),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="The span of the monitoring summary: 24h, 7d, at most 31d (default: 30d).",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Write a model's compliance report: its card and lineage, approvals, the policy's gates
    now, the model's audit trail and a monitoring summary (traffic, drift, live accuracy)."""
    from dockyard.governance.rendering import REPORT_FORMATS, render_report
    from dockyard.security.principals import local_user
    from dockyard.services.report import build_report

    chosen = output_format or ("json" if out and out.suffix.lower() == ".json" else "html")
    if chosen not in REPORT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(REPORT_FORMATS)}")
    if url is not None:
        with remote_client(url, home) as client:
            text = client.report(model, version=version, format=chosen, window=window)
        write_document(text, out)
        return
    data = build_report(open_workspace(home), local_user(), model, version, window=window)
    write_document(render_report(data, chosen), out)
