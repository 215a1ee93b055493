"""``dockyard models card``: show a version's model card with its lineage (Markdown, HTML or
JSON), or set it from a file and field by field. Wired into the ``models`` group by its module; acts
as the local user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace, parse_pairs
from dockyard.cli.report import write_document


def card_command(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION.")],
    set_from: Annotated[
        Path | None,
        typer.Option(
            "--set",
            help="Set the card from this .toml, .json or .yaml file (it replaces the card).",
            show_default=False,
        ),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="FIELD=TEXT: set one field (an empty TEXT removes it; owners: names separated "
            "by commas), repeatable.",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="markdown, html or json.")
    ] = "markdown",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (default: stdout).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Show a version's model card with its lineage (data fingerprint, code commit, parent,
    environment, who and when), or set it with --set FILE and/or --field FIELD=TEXT."""
    from dockyard.governance.cards import card_document, field_updates, read_card_file
    from dockyard.governance.rendering import CARD_FORMATS, render_card
    from dockyard.security.principals import local_user
    from dockyard.services import cards

    if output_format not in CARD_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(CARD_FORMATS)}")
    workspace = open_workspace(home)
    version = cards.read_card(workspace, local_user(), ref)
    if set_from is None and field is None:
        write_document(render_card(card_document(version), output_format), out)
        return
    updates = field_updates(parse_pairs(field, "field"))
    card = updates if set_from is None else {**read_card_file(set_from), **updates}
    stored = cards.set_card(
        workspace, local_user(), version.model, version.version, card, merge=set_from is None
    )
    missing = card_document(stored)["missing"]
    typer.echo(f"set the model card of {stored.ref}; not given: {', '.join(missing) or 'none'}")
