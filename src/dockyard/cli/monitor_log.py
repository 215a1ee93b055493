"""``dockyard monitor log``, ``monitor feedback`` and ``monitor evaluate``: the prediction log as
CSV, JSON or Parquet; ground-truth labels from a CSV file; each version's live metrics on its
labelled traffic beside those recorded at registration.

``log`` and ``feedback`` act on the local home, or (``--url``) on a server through
``GET /api/models/{m}/predictions`` and ``POST /v2/models/{m}/feedback``. Heavy modules (pyarrow,
the registry, scikit-learn) are imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dockyard.cli.options import HomeOption, JsonListOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client
from dockyard.errors import InvalidInput


def log(
    model: Annotated[str, typer.Argument(help="Model name.")],
    since: Annotated[
        str, typer.Option(help="How far back: 30m, 1h, 7d (rows answered since then).")
    ] = "1h",
    version: Annotated[int | None, typer.Option(help="Only this version's rows.")] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="csv, json (an array of rows) or parquet.")
    ] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Only the newest N rows (default: all locally; with --url the server's most, "
            "100000)."
        ),
    ] = None,
    machines: Annotated[
        str | None,
        typer.Option(
            help="Read the log of these machines from prediction_log_url: 'all' (every machine "
            "in the bucket and this one) or NAME,NAME (log_machine values); default: this "
            "home's log only.",
            show_default=False,
        ),
    ] = None,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Export the prediction log of MODEL: one row per predicted row, with its request id, time,
    caller, version, latency, inputs and outputs, in time order."""
    from dockyard.monitoring.predlog import FORMATS

    if output_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if output_format == "parquet" and output is None and sys.stdout.isatty():
        raise typer.BadParameter("parquet is binary: give --output FILE (or redirect stdout)")
    if limit is not None and limit < 1:
        raise typer.BadParameter("--limit must be at least 1")
    if url and machines is not None:
        raise typer.BadParameter("--machines reads the bucket from this home: leave out --url")
    if url:
        data = _remote_log(url, home, model, since, version, output_format, limit)
    else:
        data = _local_log(home, model, machines, since, version, output_format, limit)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror}") from None
    typer.echo(f"wrote {output}", err=True)


def _local_log(
    home: Path | None,
    model: str,
    machines: str | None,
    since: str,
    version: int | None,
    fmt: str,
    limit: int | None,
) -> bytes:
    from dockyard.monitoring.predlog import encode_table, log_cipher, read_predictions
    from dockyard.registry.store import utc_now
    from dockyard.security.keystore import parse_duration

    start = utc_now() - parse_duration(since)
    workspace = open_workspace(home)
    workspace.store.get_model(model)
    cipher = log_cipher(workspace.settings, workspace.home)
    if machines is None:
        table = read_predictions(
            workspace.home, model, since=start, version=version, cipher=cipher, limit=limit
        )
    else:
        from dockyard.monitoring.predlog.machines import read_machines

        if not workspace.settings.prediction_log_url:
            raise InvalidInput(
                "--machines reads the bucket of prediction_log_url, which is not set: set it "
                "(DOCKYARD_PREDICTION_LOG_URL=s3://BUCKET/PREFIX) as the servers have it"
            )
        names = [name.strip() for name in machines.split(",") if name.strip()]
        if not names:
            raise InvalidInput("--machines takes 'all' or machine names, NAME,NAME")
        table = read_machines(
            workspace.home,
            workspace.settings,
            model,
            machines=None if names == ["all"] else names,
            since=start,
            version=version,
            limit=limit,
        )
    return encode_table(table, fmt)


def _remote_log(
    url: str,
    home: Path | None,
    model: str,
    since: str,
    version: int | None,
    fmt: str,
    limit: int | None,
) -> bytes:
    from dockyard.monitoring.predlog import EXPORT_LIMIT

    with remote_client(url, home) as client:
        return client.predictions(
            model, since=since, version=version, limit=limit or EXPORT_LIMIT, format=fmt
        )


def feedback(
    model: Annotated[str, typer.Argument(help="Model name.")],
    labels: Annotated[
        Path,
        typer.Argument(
            help="CSV file with columns request_id, label and optionally row (default 0)."
        ),
    ],
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Attach ground truth to MODEL's logged predictions: each label names the request by the
    X-Request-ID its answer carried (and the row within it)."""
    from dockyard.monitoring.feedback import labels_from_csv

    table = labels_from_csv(labels)
    if url:
        sent = _send_labels(url, home, model, table.select(["request_id", "row", "label"]))
    else:
        from dockyard.monitoring.feedback import store_labels
        from dockyard.monitoring.predlog import log_cipher
        from dockyard.security.principals import local_user

        workspace = open_workspace(home)
        workspace.store.get_model(model)
        cipher = log_cipher(workspace.settings, workspace.home)
        sent = store_labels(workspace.home, workspace.store, model, table, local_user(), cipher)
    typer.echo(f"stored {sent} labels for {model}")


def _send_labels(url: str, home: Path | None, model: str, table: Any) -> int:
    with remote_client(url, home) as client:
        return client.send_feedback(model, table.to_pylist())


def evaluate(
    model: Annotated[str, typer.Argument(help="Model name.")],
    window: Annotated[
        str, typer.Option(help="Traffic to score: a time (24h, 7d) or the newest rows (10000rows).")
    ] = "24h",
    as_json: JsonListOption = False,
    home: HomeOption = None,
) -> None:
    """Score each version of MODEL on its labelled predictions of the window: accuracy,
    precision, recall, F1 and AUC (classifiers) or MAE and RMSE (regressors), beside the metrics
    recorded at registration. The results are stored for the dashboard and the alert rules."""
    import json

    from dockyard.monitoring.feedback import evaluate as run
    from dockyard.monitoring.predlog import log_cipher

    workspace = open_workspace(home)
    workspace.store.get_model(model)
    cipher = log_cipher(workspace.settings, workspace.home)
    results = run(workspace.home, workspace.store, model, window, cipher=cipher)
    if as_json:
        typer.echo(json.dumps([result.to_dict() for result in results], indent=2))
        return
    if not results:
        typer.echo(f"no labelled predictions of {model} in the window {window}", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    shown = Table()
    for column in ("version", "metric", "live", "registered", "rows"):
        shown.add_column(column, no_wrap=True)
    for result in results:
        registered = "-" if result.registered is None else f"{result.registered:.4g}"
        shown.add_row(
            str(result.version), result.metric, f"{result.value:.4g}", registered, str(result.rows)
        )
    Console().print(shown)
