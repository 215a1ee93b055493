"""``dockyard backup create|verify|restore``: consistent snapshots of a home and their restore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace

app = typer.Typer(
    help="Backups of a home: create, verify, restore onto a new home.", no_args_is_help=True
)
PASSPHRASE_ENV = "DOCKYARD_BACKUP_PASSPHRASE"

FileArgument = Annotated[Path, typer.Argument(help="The backup file.", show_default=False)]


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
    """Back up a home while it serves: registry, artifacts, prediction log, labels, config."""
    from dockyard.services.backup import WITHOUT_SECRETS, create_backup

    passphrase = _passphrase(confirm=True) if encrypt else ""
    workspace = open_workspace(home)
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


@app.command("verify")
def verify_command(file: FileArgument) -> None:
    """Check a backup: every file against its manifest, the registry opens, the audit chain
    verifies. Exit 0 when sound, else 13 naming the first problem."""
    from dockyard.services.backup_restore import is_encrypted_file, verify_backup

    passphrase = _passphrase(confirm=False) if is_encrypted_file(file) else ""
    verified = verify_backup(file, passphrase)
    manifest = verified.manifest
    audit = "audit chain verified" if verified.audit_checked else "PostgreSQL dump readable"
    typer.echo(
        f"backup sound: {file} ({manifest.created}, {len(manifest.files)} files, "
        f"{verified.versions} versions, {audit})"
    )


@app.command("restore")
def restore_command(
    file: FileArgument,
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
    """Restore a backup as a new home (verified first; nothing is written on a failure)."""
    from dockyard.services.backup_restore import is_encrypted_file, restore_backup

    passphrase = _passphrase(confirm=False) if is_encrypted_file(file) else ""
    restored = restore_backup(file, home, passphrase, database_url)
    typer.echo(f"restored {file} into {home}: {restored.versions} versions, audit chain verified")
    if database_url:
        typer.echo(f"serve it with DOCKYARD_DATABASE_URL set to that database and --home {home}")
    if not restored.manifest.has_secrets:
        typer.echo(
            "note: the backup held no secrets: API keys of the old home do not work here "
            "(create new ones with dockyard keys create); see docs/reliability.md",
            err=True,
        )
