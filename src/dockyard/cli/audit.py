"""``dockyard audit verify|log|export``: the local home's audit trail, checked, listed and exported.

These commands only read the trail, so they open the registry alone (no start-up sweep, no policy
entry): a trail damaged enough to refuse new entries can still be checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dockyard.cli.options import (
    HomeOption,
    JsonListOption,
    LimitOption,
    close_when_done,
    settings_from,
)
from dockyard.errors import AuditTampered, InvalidInput

if TYPE_CHECKING:
    from dockyard.registry.audit import AuditRecord
    from dockyard.registry.store import RegistryStore

app = typer.Typer(
    help="The audit trail: verify its chain, list and export its entries.", no_args_is_help=True
)
MAX_LIMIT = 100_000
FORMATS = ("jsonl",)


def _registry(home: Path | None) -> RegistryStore:
    from dockyard.registry.store import RegistryStore

    store = RegistryStore.open(settings_from(home=home).effective_database_url())
    close_when_done(store.close)
    return store


@app.command("verify")
def verify_command(home: HomeOption = None) -> None:
    """Check the trail's hash chain: every entry's hash, its link to the one before and the head.
    Exit 0 when intact; else one line per problem on stderr (the entry's number and what was done
    to it: edited, deleted, inserted, reordered) and exit 12."""
    from dockyard.registry.audit import count_entries
    from dockyard.registry.audit_chain import verify

    registry = _registry(home)
    try:
        problems = verify(registry.engine)
        if not problems:
            typer.echo(f"audit trail intact: {count_entries(registry.engine)} entries")
            return
    finally:
        registry.close()
    for problem in problems:
        typer.echo(f"entry {problem.seq}: {problem.kind}: {problem.message}", err=True)
    raise AuditTampered(
        f"the audit trail was tampered with: {len(problems)} problem(s) found; restore the "
        "registry database from a backup, or keep this output as the record of what was changed"
    )


@app.command("log")
def log_command(
    model: Annotated[
        str | None, typer.Option("--model", help="Only entries of this model.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only entries by this actor (alice, key:ci).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only entries of the last 30m, 1h, 7d, or since an ISO time."),
    ] = None,
    limit: LimitOption = 1000,
    as_json: JsonListOption = False,
    home: HomeOption = None,
) -> None:
    """Show audit entries, oldest first: who changed what, when."""
    from dockyard.registry.audit import read_entries
    from dockyard.registry.store import utc_now
    from dockyard.security.keystore import parse_since

    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIMIT}")
    start = parse_since(since, utc_now()) if since else None
    registry = _registry(home)
    try:
        entries = read_entries(registry.engine, model=model, actor=actor, since=start, limit=limit)
    finally:
        registry.close()
    if as_json:
        typer.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    if not entries:
        typer.echo("no audit entries", err=True)
        return
    _print_table(entries)


def _print_table(entries: list[AuditRecord]) -> None:
    from datetime import UTC

    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("seq", "at (UTC)", "action"):
        table.add_column(column, no_wrap=True)
    for column in ("actor", "target", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.seq),
            entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            entry.action,
            entry.actor,
            entry.target,
            _summary(entry.details),
        )
    Console().print(table)


def _summary(details: dict[str, Any]) -> str:
    """``key=value`` pairs, the empty ones left out (``--json`` shows every detail as stored)."""
    pairs = [
        f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in sorted(details.items())
        if value is not None
    ]
    return " ".join(pairs) or "-"


@app.command("export")
def export_command(
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl: one JSON entry a line, hashes included.")
    ] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: stdout).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Export every entry, oldest first, with the hashes that let anyone re-check the chain."""
    from dockyard.registry.audit import export_jsonl

    if output_format not in FORMATS:
        raise InvalidInput(f"--format must be {' or '.join(FORMATS)}, got {output_format!r}")
    registry = _registry(home)
    try:
        if out is None:
            sys.stdout.flush()
            written = export_jsonl(registry.engine, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            try:
                with out.open("wb") as handle:
                    written = export_jsonl(registry.engine, handle)
            except OSError as exc:
                raise InvalidInput(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        registry.close()
    typer.echo(f"exported {written} audit entries{f' to {out}' if out else ''}", err=True)
