"""``dockyard keys signing-create`` and ``dockyard models sign``: Ed25519-signed versions.

Wired into the ``keys`` and ``models`` groups by their modules; both act as the local user.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace


def signing_create(home: HomeOption = None) -> None:
    """Create an Ed25519 signing key: the private key sealed in the home, the public key beside
    it (trusted by this home's --require-signed servers)."""
    from dockyard.services.signatures import create_key

    workspace = open_workspace(home)
    created = create_key(workspace)
    typer.echo(f"created signing key {created.key_id}")
    typer.echo(
        f"public key: {created.public_key} (servers started with --require-signed trust it; copy "
        "it into the secrets folder of every other home that serves the models you sign)"
    )


def sign_command(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION.")],
    key: Annotated[
        str | None,
        typer.Option("--key", help="Signing key id (default: the home's only signing key)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Sign a version: its artifact digest and identity (framework, format, signature, …)."""
    from dockyard.services.signatures import sign

    signed = sign(open_workspace(home), ref, key)
    version = signed.version
    replaced = " (replacing its earlier signature by this key)" if signed.replaced else ""
    typer.echo(
        f"signed {version.ref} ({version.framework}, sha256 {version.artifact.digest[:12]}) "
        f"with key {signed.record.key_id}{replaced}"
    )
