"""``dockyard policy check``, ``dockyard promote`` and ``dockyard approvals list|approve|reject``:
the policy's gates and four-eyes promotion of a protected alias, on the local home as the
operating-system user or (``--url``) on a server as the key in ``DOCKYARD_API_KEY``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.cli.remote import UrlOption, remote_client

policy_app = typer.Typer(
    help="The governance policy of dockyard.toml and its gates.", no_args_is_help=True
)
approvals_app = typer.Typer(
    help="Promotion requests: list, approve, reject (four eyes).", no_args_is_help=True
)

CommentOption = Annotated[
    str, typer.Option("--comment", help="Why: kept with the request and in the audit trail.")
]


@policy_app.command("check")
def check(
    ref: Annotated[str, typer.Argument(help="The version: NAME:VERSION (or NAME, NAME@ALIAS).")],
    alias: Annotated[
        str | None,
        typer.Option(help="The alias to check for (default: the first protected one)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Show every gate of the policy for pointing ALIAS at a version, and its result; exit code
    0 when all pass, 5 (as a refused promotion) when one fails."""
    from dockyard.errors import Conflict

    if url:
        from dockyard.cli.remote import resolve

        with remote_client(url, home) as client:
            version = resolve(client, ref)
            result = client.check_policy(version["model"], version["version"], alias)
    else:
        from dockyard.services import promotions

        result = promotions.check(open_workspace(home), ref, alias).to_dict()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_gates(result)
    if not result["passed"]:
        raise typer.Exit(Conflict.exit_code)


def _print_gates(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    current = result["current_version"]
    now = f"now {result['model']}:{current}" if current is not None else "not set yet"
    table = Table(title=f"{result['model']}:{result['version']} → @{result['alias']} ({now})")
    table.add_column("gate", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for gate in result["gates"]:
        table.add_row(gate["name"], "pass" if gate["passed"] else "FAIL", gate["detail"])
    Console().print(table)
    typer.echo("every gate passes" if result["passed"] else "a gate fails: promotion refused")


def promote(
    name: Annotated[str, typer.Argument(help="The model.")],
    version: Annotated[int, typer.Argument(help="The version to promote.")],
    to: Annotated[str, typer.Option("--to", help="The protected alias, e.g. production.")],
    comment: CommentOption = "",
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Request moving a protected alias to a version (four eyes): every gate must pass; an
    approver who neither registered the version nor requested the move approves it."""
    if url:
        with remote_client(url, home) as client:
            request = client.request_promotion(name, version, to, comment)
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import promotions

        workspace = open_workspace(home)
        request = promotions.request_promotion(
            workspace, local_user(), name, version, to, comment
        ).to_dict()
    typer.echo(
        f"promotion {request['id']} requested: {name}:{version} → @{to}, pending an approver "
        f"(dockyard approvals approve {request['id']})"
    )


@approvals_app.command("list")
def list_command(
    model: Annotated[str | None, typer.Option(help="Only this model's requests.")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only requests in this state: pending, approved, rejected.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """List promotion requests, newest first."""
    if url:
        with remote_client(url, home) as client:
            found = client.promotions(model=model, state=state)
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import promotions

        workspace = open_workspace(home)
        found = [
            request.to_dict()
            for request in promotions.list_promotions(workspace, local_user(), model, state)
        ]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no promotion requests", err=True)
        return
    _print_requests(found)


def _print_requests(found: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("id", "version", "alias", "state", "requested by", "requested (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("decided by", overflow="fold")
    table.add_column("comment", overflow="fold")
    for request in found:
        comment = request["decision_comment"] or request["comment"]
        table.add_row(
            str(request["id"]),
            f"{request['model']}:{request['version']}",
            request["alias"],
            request["state"],
            request["requested_by"],
            _when(request["requested_at"]),
            request["decided_by"] or "-",
            comment or "-",
        )
    Console().print(table)


def _when(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@approvals_app.command("approve")
def approve(
    promotion_id: Annotated[int, typer.Argument(metavar="ID", help="The request's id.")],
    comment: CommentOption = "",
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Approve a pending request: the gates are checked again, then the alias moves. Not by the
    version's registrant nor the requester (four eyes)."""
    if url:
        with remote_client(url, home) as client:
            decided = client.approve_promotion(promotion_id, comment)
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import promotions

        workspace = open_workspace(home)
        decided = promotions.approve(workspace, local_user(), promotion_id, comment).to_dict()
    typer.echo(
        f"promotion {promotion_id} approved: {decided['model']}@{decided['alias']} → "
        f"{decided['model']}:{decided['version']}"
    )


@approvals_app.command("reject")
def reject(
    promotion_id: Annotated[int, typer.Argument(metavar="ID", help="The request's id.")],
    comment: Annotated[str, typer.Option("--comment", help="Why it is rejected (required).")],
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Reject a pending request, saying why; the alias stays where it is."""
    if url:
        with remote_client(url, home) as client:
            decided = client.reject_promotion(promotion_id, comment)
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import promotions

        workspace = open_workspace(home)
        decided = promotions.reject(workspace, local_user(), promotion_id, comment).to_dict()
    typer.echo(
        f"promotion {promotion_id} rejected: {decided['model']}:{decided['version']} stays off "
        f"@{decided['alias']}"
    )
