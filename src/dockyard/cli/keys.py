"""``dockyard keys``: API keys (on the local home, or ``--url``: on a server through its API), the
encryption key and signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client

app = typer.Typer(help="API keys, encryption and signing keys.", no_args_is_help=True)


def _show_new(record: dict[str, Any], key: str) -> None:
    """Print a new key once, with what it may do (``record``: as ``KeyRecord.to_dict`` gives it)."""
    models = record["models"]
    scope = ", ".join(sorted(models)) if models is not None else "every model"
    expires = record["expires_at"] or "never"
    typer.echo(f"{key}")
    typer.echo(
        f"created key {record['key_id']} ({record['name']}, {record['role']}, {scope}, expires "
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
    url: UrlOption = None,
) -> None:
    """Create an API key; the key is printed once, on stdout."""
    from dockyard.registry.store import utc_now
    from dockyard.security.keystore import parse_duration
    from dockyard.security.principals import local_user, parse_role

    scope = models.split(",") if models else None
    if url:
        with remote_client(url, home) as client:
            created = client.create_key(name, role, scope, expires, rate)
        _show_new(created, created["key"])
        return
    record, key = open_workspace(home).keys.create(
        local_user(),
        name,
        parse_role(role),
        scope,
        parse_duration(expires) if expires else None,
        rate,
    )
    _show_new(record.to_dict(utc_now()), key)


@app.command("list")
def list_command(
    all_keys: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired keys.")
    ] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """List API keys (never the keys themselves)."""
    from rich.console import Console
    from rich.table import Table

    from dockyard.registry.store import utc_now

    if url:
        with remote_client(url, home) as client:
            records = client.list_keys()
    else:
        now = utc_now()
        records = [record.to_dict(now) for record in open_workspace(home).keys.all()]
    table = Table("id", "name", "role", "models", "rate", "expires", "state", "created by")
    table.columns[0].no_wrap = True  # the id is what revoke and rotate take: never cut
    for record in records:
        if record["state"] != "active" and not all_keys:
            continue
        models, expires = record["models"], record["expires_at"]
        table.add_row(
            record["key_id"],
            record["name"],
            record["role"],
            ", ".join(sorted(models)) if models is not None else "*",
            record["rate"] or "-",
            datetime.fromisoformat(expires).isoformat(timespec="seconds") if expires else "never",
            record["state"],
            record["created_by"],
        )
    Console().print(table)


@app.command("revoke")
def revoke_command(
    key: Annotated[str, typer.Argument(help="Key id, or the name of one active key.")],
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Revoke a key: servers refuse it within about a second."""
    from dockyard.registry.store import utc_now
    from dockyard.security.principals import local_user

    if url:
        with remote_client(url, home) as client:
            record = client.revoke_key(key)
    else:
        record = open_workspace(home).keys.revoke(local_user(), key).to_dict(utc_now())
    typer.echo(f"revoked key {record['key_id']} ({record['name']})")


@app.command("rotate")
def rotate_command(
    key: Annotated[str, typer.Argument(help="Key id, or the name of one active key.")],
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old key keeps working (0s: not at all).")
    ] = "0s",
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Replace a key with a new one of the same name, role, models and lifetime."""
    from dockyard.registry.store import utc_now
    from dockyard.security.keystore import parse_duration
    from dockyard.security.principals import local_user

    if url:
        with remote_client(url, home) as client:
            rotated = client.rotate_key(key, grace)
        _show_new(rotated, rotated["key"])
        return
    record, new = open_workspace(home).keys.rotate(local_user(), key, parse_duration(grace))
    _show_new(record.to_dict(utc_now()), new)


@app.command("rotate-encryption")
def rotate_encryption_command(home: HomeOption = None) -> None:
    """Re-encrypt what Dockyard stores encrypted under a new key.

    With the home's key file: a new key is made, everything is re-encrypted, the old key is
    dropped (rerun it if it was interrupted). With DOCKYARD_ENCRYPTION_KEY: set it to
    ``NEW,OLD`` first, run this, then set it to ``NEW``.
    """
    from dockyard.security.principals import local_user
    from dockyard.services.encryption_keys import rotate_encryption

    rotated = rotate_encryption(open_workspace(home), local_user())
    typer.echo(f"re-encrypted {rotated.changed} item(s) under key {rotated.key_id}")


from dockyard.cli import signing  # noqa: E402

app.command("signing-create")(signing.signing_create)
