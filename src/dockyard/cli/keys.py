"""``dockyard keys``: API keys, the encryption key and signing keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.encryption import (
    Cipher,
    encode_key,
    new_key,
    open_cipher,
    reencrypt_files,
    write_key_file,
)
from dockyard.errors import InvalidInput
from dockyard.registry.store import utc_now
from dockyard.security.apikeys import KeyRecord
from dockyard.security.keystore import parse_duration
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import local_user, parse_role, require

app = typer.Typer(help="API keys, encryption and signing keys.", no_args_is_help=True)
console = Console()


def _show_new(record: KeyRecord, key: str) -> None:
    """Print a new key once, with what it may do."""
    scope = ", ".join(sorted(record.models)) if record.models is not None else "every model"
    expires = record.expires_at.isoformat() if record.expires_at else "never"
    typer.echo(f"{key}")
    typer.echo(
        f"created key {record.key_id} ({record.name}, {record.role.value}, {scope}, expires "
        f"{expires}); it is shown only now: store it in a secret manager",
        err=True,
    )


@app.command("create")
def create_command(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    role: Annotated[
        str, typer.Option("--role", help="predictor, deployer, approver, auditor or admin.")
    ],
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models it may use (all).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime such as 90d or 12h (never).")
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Its own rate limit, such as 100/s.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Create an API key; the key is printed once, on stdout."""
    record, key = open_workspace(home).keys.create(
        local_user(),
        name,
        parse_role(role),
        models.split(",") if models else None,
        parse_duration(expires) if expires else None,
        rate,
    )
    _show_new(record, key)


@app.command("list")
def list_command(
    all_keys: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired keys.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """List API keys (never the keys themselves)."""
    now = utc_now()
    table = Table("id", "name", "role", "models", "rate", "expires", "state", "created by")
    for record in open_workspace(home).keys.all():
        state = record.state(now)
        if state != "active" and not all_keys:
            continue
        table.add_row(
            record.key_id,
            record.name,
            record.role.value,
            ", ".join(sorted(record.models)) if record.models is not None else "*",
            record.rate or "-",
            record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never",
            state,
            record.created_by,
        )
    console.print(table)


@app.command("revoke")
def revoke_command(
    key: Annotated[str, typer.Argument(help="Key id, or the name of one active key.")],
    home: HomeOption = None,
) -> None:
    """Revoke a key: servers refuse it within about a second."""
    record = open_workspace(home).keys.revoke(local_user(), key)
    typer.echo(f"revoked key {record.key_id} ({record.name})")


@app.command("rotate")
def rotate_command(
    key: Annotated[str, typer.Argument(help="Key id, or the name of one active key.")],
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old key keeps working (0s: not at all).")
    ] = "0s",
    home: HomeOption = None,
) -> None:
    """Replace a key with a new one of the same name, role, models and lifetime."""
    record, new = open_workspace(home).keys.rotate(local_user(), key, parse_duration(grace))
    _show_new(record, new)


@app.command("rotate-encryption")
def rotate_encryption_command(home: HomeOption = None) -> None:
    """Re-encrypt what Dockyard stores encrypted under a new key.

    With the home's key file: a new key is made, everything is re-encrypted, the old key is
    dropped (rerun it if it was interrupted). With DOCKYARD_ENCRYPTION_KEY: set it to
    ``NEW,OLD`` first, run this, then set it to ``NEW``.
    """
    workspace = open_workspace(home)
    require(local_user(), SERVICES["rotate_encryption"])
    secrets_dir = workspace.home.secrets
    setting = workspace.settings.encryption_key
    if setting:
        cipher = open_cipher(secrets_dir, setting)
        if len(cipher.keys) < 2:
            raise InvalidInput(
                "DOCKYARD_ENCRYPTION_KEY holds one key: set it to NEW,OLD (base64, new first) "
                "to re-encrypt from OLD to NEW; a new key: " + encode_key(new_key())
            )
    else:
        current = open_cipher(secrets_dir)
        cipher = Cipher([new_key(), *current.keys])
        write_key_file(secrets_dir, cipher.keys)
    changed = reencrypt_files(secrets_dir, cipher)
    if not setting:
        write_key_file(secrets_dir, cipher.keys[:1])
    typer.echo(f"re-encrypted {changed} item(s) under key {cipher.primary_id}")
