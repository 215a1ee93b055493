"""``dockyard backup create|list|verify|restore``: consistent snapshots of a home, copied to the
``backup_url`` bucket when one is set, and their restore (from a file or from the bucket)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, JsonListOption, open_workspace, settings_from
from dockyard.errors import DockyardError

app = typer.Typer(
    help="Backups of a home: create, list, verify, restore onto a new home.",
    no_args_is_help=True,
)
PASSPHRASE_ENV = "DOCKYARD_BACKUP_PASSPHRASE"

SourceArgument = Annotated[
    str,
    typer.Argument(
        help="The backup file, or a backup in a bucket: s3://BUCKET/PREFIX/NAME.",
        show_default=False,
    ),
]


def _passphrase(*, confirm: bool) -> str:
    """The passphrase from DOCKYARD_BACKUP_PASSPHRASE, else asked on the terminal."""
    given = os.environ.get(PASSPHRASE_ENV, "")
    if given:
        return given
    asked: str = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    return asked


@app.command("create")
def create_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="File to write (default: the home's backups folder)."),
    ] = None,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help="Encrypt the backup under a passphrase (DOCKYARD_BACKUP_PASSPHRASE, else asked) "
            "and include the home's secrets.",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Back up a home while it serves: registry, artifacts, prediction log, labels, config;
    with backup_url set, verified and uploaded to that bucket too (the local file kept)."""
    from dockyard.services.backup import WITHOUT_SECRETS, create_backup

    passphrase = _passphrase(confirm=True) if encrypt else ""
    workspace = open_workspace(home)
    if workspace.settings.backup_url and out is not None:
        from dockyard.services.backup_bucket import check_file_name

        check_file_name(out.name)  # before the backup is written, not after
    backup = create_backup(workspace, out, passphrase)
    manifest = backup.manifest
    typer.echo(
        f"backup written: {backup.path} ({len(manifest.files)} files, "
        f"{manifest.total_bytes} bytes, {manifest.database} registry"
        f"{', encrypted, secrets included' if encrypt else ''})"
    )
    if not encrypt:
        typer.echo(f"note: {WITHOUT_SECRETS}", err=True)
    if workspace.settings.encryption_key:
        typer.echo(
            "note: the encryption_key setting (DOCKYARD_ENCRYPTION_KEY) is not in any backup; "
            "keep it: the sealed prediction log cannot be read without it",
            err=True,
        )
    if workspace.settings.backup_url:
        from dockyard.services.backup_bucket import BackupBucket, upload_backup

        bucket = BackupBucket.from_settings(workspace.settings)
        uploaded = upload_backup(bucket, backup.path, passphrase)
        typer.echo(f"backup uploaded: {uploaded.location} ({uploaded.size} bytes, sha256 recorded)")


@app.command("list")
def list_command(home: HomeOption = None, as_json: JsonListOption = False) -> None:
    """The backups in the home's backups folder and, with backup_url set, in its bucket: name,
    size, time written (or uploaded), location."""
    from dockyard.home import Home
    from dockyard.services.backup_bucket import BackupBucket, local_backups

    settings = settings_from(home=home)
    listed = local_backups(Home(settings.home).backups)
    failure = None
    if settings.backup_url:
        try:
            listed += BackupBucket.from_settings(settings).backups()
        except DockyardError as exc:  # the local ones are shown still, then the error
            failure = exc
    if as_json:
        typer.echo(json.dumps([backup.to_dict() for backup in listed], indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("name", "size", "time (UTC)", "location")
        table.columns[0].no_wrap = table.columns[2].no_wrap = True
        table.columns[3].overflow = "fold"
        for backup in listed:
            time = backup.time.strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(backup.name, str(backup.size), time, backup.location)
        Console().print(table)
    if failure is not None:
        raise failure


@app.command("verify")
def verify_command(file: SourceArgument) -> None:
    """Check a backup: every file against its manifest, the registry opens, the audit chain
    verifies (one in a bucket is downloaded first, checked against its recorded size and
    SHA-256). Exit 0 when sound, else 13 naming the first problem."""
    from dockyard.services.backup_restore import is_encrypted_file, verify_backup

    with _local(file) as path:
        passphrase = _passphrase(confirm=False) if is_encrypted_file(path) else ""
        verified = verify_backup(path, passphrase)
    manifest = verified.manifest
    audit = "audit chain verified" if verified.audit_checked else "PostgreSQL dump readable"
    typer.echo(
        f"backup sound: {file} ({manifest.created}, {len(manifest.files)} files, "
        f"{verified.versions} versions, {audit})"
    )


@app.command("restore")
def restore_command(
    file: SourceArgument,
    home: Annotated[
        Path,
        typer.Option("--home", help="The new home: a folder that is absent or empty."),
    ],
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="For a PostgreSQL backup: the new, empty database to restore the registry into.",
        ),
    ] = "",
) -> None:
    """Restore a backup as a new home (verified first; nothing is written on a failure). One
    in a bucket is downloaded beside the new home first, checked against its recorded size and
    SHA-256 (exit 13 when it does not match)."""
    from dockyard.services.backup_restore import (
        check_restore_target,
        is_encrypted_file,
        restore_backup,
    )

    target = check_restore_target(home)
    with _local(file, beside=target.parent) as path:
        passphrase = _passphrase(confirm=False) if is_encrypted_file(path) else ""
        restored = restore_backup(path, home, passphrase, database_url)
    typer.echo(f"restored {file} into {home}: {restored.versions} versions, audit chain verified")
    if database_url:
        typer.echo(f"serve it with DOCKYARD_DATABASE_URL set to that database and --home {home}")
    if not restored.manifest.has_secrets:
        typer.echo(
            "note: the backup held no secrets: API keys of the old home do not work here "
            "(create new ones with dockyard keys create); see docs/reliability.md",
            err=True,
        )


@contextlib.contextmanager
def _local(source: str, beside: Path | None = None) -> Iterator[Path]:
    """The backup ``source`` names as a local file: a path as it is; an ``s3://`` URL
    downloaded (into a hidden folder in ``beside``, else the temporary folder) and verified
    against its recorded size and SHA-256, deleted on exit."""
    from dockyard.services.backup_bucket import fetched, is_bucket_url

    if not is_bucket_url(source):
        yield Path(source)
        return
    with fetched(source, settings_from(), beside) as path:
        yield path
