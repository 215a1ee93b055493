"""``dockyard models``: register, list, show, alias, archive and unarchive model versions, on the
local home or (``--url``) on a server through its API.

Only light modules are imported at the top, so that loading this module (for ``dockyard --help``
or any other command) stays fast: each command imports the services, the registry, the client and
Rich's tables it uses. Annotations are evaluated by Typer, so they name only built-in types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dockyard.cli.options import HomeOption, open_workspace, parse_pairs
from dockyard.cli.remote import UrlOption, remote_client, resolve
from dockyard.errors import InvalidInput

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Register and manage model versions.", no_args_is_help=True)

REF_HELP = (
    "NAME[@ALIAS|:VERSION]: a bare NAME is its production alias, else its latest version that is "
    "not archived."
)
NAME_HELP = "Model name."


def _console() -> Console:
    from rich.console import Console

    return Console()


def _metrics(pairs: list[str] | None) -> dict[str, float]:
    metrics = {}
    for key, value in parse_pairs(pairs, "metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise typer.BadParameter(f"metric {key!r} must be a number, got {value!r}") from None
    return metrics


def _model_name(name: str) -> str:
    """The model a NAME argument names (a reference's version or alias is ignored)."""
    from dockyard.registry.refs import parse_ref

    return parse_ref(name).name


@app.command("register")
def register_command(
    model: Annotated[
        Path, typer.Argument(help="Saved model file, or a folder for a Python function.")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Required: rows like the training data (.csv, .json, .parquet or .npy); they "
            "give the signature and the rows predicted before the version is accepted. Only "
            "--signature can stand in for it."
        ),
    ] = None,
    framework: Annotated[
        str | None, typer.Option(help="Framework, when detection is not enough.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option(help="Explicit signature as a JSON file.")
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept a pickle/joblib file (unsafe; recorded).")
    ] = False,
    trusted_type: Annotated[
        list[str] | None, typer.Option(help="Extra type skops may load, repeatable.")
    ] = None,
    entrypoint: Annotated[
        str | None, typer.Option(help="module:function, for a Python-function folder.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    card: Annotated[
        Path | None,
        typer.Option(
            help="A model card file (.toml, .json or .yaml) to set on the new version.",
            show_default=False,
        ),
    ] = None,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Register a model file as a new version."""
    metrics = _metrics(metric)
    if reference is None and signature is None:
        raise typer.BadParameter(
            "give --reference FILE: rows like the training data, which give the signature and "
            "the rows Dockyard predicts before it accepts the model (or --signature FILE)"
        )
    explicit = None
    if signature is not None:
        try:
            explicit = json.loads(signature.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read signature file {signature}: {exc}") from exc
    if url:
        if entrypoint is not None:
            raise InvalidInput(
                "--entrypoint registers a Python-function folder, which cannot be uploaded: "
                "register it on the server's machine (without --url)"
            )
        if card is not None:
            raise InvalidInput(
                "--card is for a registration on the local home: with --url, register, then "
                "PUT the card's fields to /api/models/NAME/versions/VERSION/card"
            )
        with remote_client(url, home) as client:
            data = client.register(
                model,
                name,
                reference=reference,
                framework=framework,
                description=description,
                metrics=metrics,
                params=parse_pairs(param, "param"),
                tags=parse_pairs(tag, "tag"),
                alias=alias,
                signature=explicit,
                allow_pickle=allow_pickle,
                trusted_types=tuple(trusted_type or ()),
            )
        _show_registered(data)
        return
    from dockyard.governance.cards import read_card_file
    from dockyard.security.principals import local_user
    from dockyard.services import cards
    from dockyard.services.datafiles import as_reference, read_columns
    from dockyard.services.register import Registration, register

    reference_data, feature_names = (None, None)
    if reference is not None:
        reference_data, feature_names = as_reference(read_columns(reference))
    request = Registration(
        name=name,
        reference_data=reference_data,
        feature_names=feature_names,
        framework=framework,
        signature=explicit,
        metrics=metrics,
        params=parse_pairs(param, "param"),
        tags=parse_pairs(tag, "tag"),
        description=description,
        allow_pickle=allow_pickle,
        trusted_types=tuple(trusted_type or ()),
        entrypoint=entrypoint,
        alias=alias,
    )
    workspace = open_workspace(home)
    # The card is read (and checked) first: a bad one stops the command before anything is
    # registered.
    card_fields = None if card is None else read_card_file(card)
    registered = register(workspace, model, request)
    if card_fields is not None:
        registered = cards.set_card(
            workspace, local_user(), registered.model, registered.version, card_fields
        )
    _show_registered(registered.to_dict())


def _show_registered(version: dict[str, Any]) -> None:
    aliases = f" @{', @'.join(version['aliases'])}" if version["aliases"] else ""
    typer.echo(
        f"registered {_ref(version)}{aliases} ({version['framework']}, "
        f"sha256 {version['artifact']['sha256'][:12]})"
    )


def _ref(version: dict[str, Any]) -> str:
    return f"{version['model']}:{version['version']}"


@app.command("list")
def list_command(home: HomeOption = None, url: UrlOption = None) -> None:
    """List models with their latest version and aliases."""
    from rich.table import Table
    from rich.text import Text

    if url:
        with remote_client(url, home) as client:
            models = client.list_models()
    else:
        models = [model.to_dict() for model in open_workspace(home).store.list_models()]
    table = Table("model", "latest", "aliases", "description")
    for model in models:
        aliases = ", ".join(
            f"{alias}→{number}" for alias, number in sorted(model["aliases"].items())
        )
        latest = str(model["latest_version"] or "-")
        # Text, not markup: a description is the user's text, brackets and all.
        table.add_row(model["name"], latest, aliases, Text(model["description"]))
    _console().print(table)


@app.command("versions")
def versions_command(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: each version as `models show --json` does.")
    ] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """List every version of a model, archived ones too: when and by whom it was created, its
    framework and the aliases pointing at it."""
    model = _model_name(name)
    if url:
        with remote_client(url, home) as client:
            versions = client.list_versions(model)
    else:
        versions = [
            version.to_dict() for version in open_workspace(home).store.list_versions(model)
        ]
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("version", "created", "created by", "framework", "aliases", "archived")
    for version in versions:
        table.add_row(
            str(version["version"]),
            _when(version["created_at"]),
            Text(version["created_by"] or "-"),
            version["framework"],
            ", ".join(version["aliases"]),
            "yes" if version["archived"] else "no",
        )
    _console().print(table)


def _when(created_at: str | None) -> str:
    """A version's creation time as a table shows it: to the second, in UTC (the registry stores
    UTC; a database that drops the offset gives it back without one)."""
    if not created_at:
        return "-"
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(created_at)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


@app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Show one version: description, archived or not, artifact, signature, metrics and
    lineage."""
    if url:
        with remote_client(url, home) as client:
            data = resolve(client, ref)
            siblings = [] if as_json else client.list_versions(data["model"])
    else:
        workspace = open_workspace(home)
        data = workspace.resolve(ref).to_dict()
        siblings = (
            [] if as_json else [v.to_dict() for v in workspace.store.list_versions(data["model"])]
        )
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    from dockyard.cli.model_variants import print_optimization

    console = _console()
    artifact = data["artifact"]
    console.print(f"[bold]{_ref(data)}[/bold]  {data['framework']}  aliases: {data['aliases']}")
    # The user's own text (description, metrics, column names, …) is printed as it is, never
    # read as Rich markup: "[a]" or "[true, false]" would vanish.
    if data["description"]:
        console.print(f"description: {data['description']}", markup=False)
    if data["archived"]:
        console.print("archived: yes (kept, but not served by default)")
    else:
        console.print("archived: no")
    console.print(f"artifact sha256 {artifact['sha256']} ({artifact['format']})")
    console.print(f"created {data['created_at']} by {data['created_by']}", markup=False)
    if data["allow_pickle"]:
        console.print("[yellow]loaded from a pickle (allowed at registration)[/yellow]")
    table = Table("", "name", "datatype", "shape", "categorical", "NaN allowed")
    for kind in ("input", "output"):
        for spec in data["signature"][f"{kind}s"]:
            table.add_row(
                kind,
                Text(spec["name"]),
                spec["datatype"],
                str(list(spec["shape"])),
                str(spec["categorical"]),
                str(spec["allow_nan"]),
            )
    console.print(table)
    if data.get("profile"):
        _print_profile(console, data["profile"])
    for title in ("metrics", "params", "tags", "lineage"):
        if data[title]:
            console.print(f"{title}: {json.dumps(data[title])}", markup=False)
    print_optimization(console, data, siblings)


PROFILE_ROWS_SHOWN = 50
CATEGORIES_SHOWN = 3


def _print_profile(console: Console, profile: dict[str, Any]) -> None:
    """The reference profile, one row per feature and output (the first ``PROFILE_ROWS_SHOWN``;
    ``--json`` has them all, with bins, counts and the sample)."""
    from rich.table import Table
    from rich.text import Text

    columns = [*profile["features"].items(), *profile["outputs"].items()]
    table = Table(
        "column",
        "kind",
        "missing",
        "min",
        "median",
        "max",
        "summary",
        title=f"reference profile: {profile['rows']} rows, predictions on "
        f"{profile['prediction_rows']}",
    )
    for name, entry in columns[:PROFILE_ROWS_SHOWN]:
        missing = f"{entry['missing']:.1%}"
        if entry["kind"] == "numeric":
            median = (entry.get("quantiles") or {}).get("0.5")
            table.add_row(
                Text(name),
                "numeric",
                missing,
                _number(entry["min"]),
                _number(median),
                _number(entry["max"]),
                f"mean {_number(entry.get('mean'))}, std {_number(entry.get('std'))}",
            )
            continue
        present = sum(entry["counts"]) + entry["other"]
        top = [
            f"{value} {count / present:.0%}"
            for value, count in zip(entry["values"], entry["counts"], strict=True)
        ][:CATEGORIES_SHOWN]
        if entry["distinct"] > len(top):
            top.append(f"+{entry['distinct'] - len(top)} more")
        table.add_row(Text(name), "categorical", missing, "", "", "", Text(", ".join(top)))
    console.print(table)
    if len(columns) > PROFILE_ROWS_SHOWN:
        console.print(f"… {len(columns) - PROFILE_ROWS_SHOWN} more columns (--json has them all)")
    for name, reason in profile["skipped"].items():
        console.print(f"not profiled: {name}: {reason}", markup=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@app.command("update")
def update_command(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    description: Annotated[str | None, typer.Option(help="New model description.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="key=value; replaces the model's tags, repeatable.")
    ] = None,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Change a model's description or tags (versions stay immutable)."""
    if description is None and tag is None:
        raise typer.BadParameter("give --description and/or --tag")
    tags = parse_pairs(tag, "tag") if tag is not None else None
    if url:
        with remote_client(url, home) as client:
            model = client.update_model(name, description, tags)
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import changes

        workspace = open_workspace(home)
        model = changes.update_model(workspace, local_user(), name, description, tags).to_dict()
    typer.echo(f"{model['name']}: {model['description']!r}, tags {dict(model['tags'])}")


@app.command("alias")
def alias_command(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production or staging.")],
    version: Annotated[int | None, typer.Argument(help="Version number to point at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Point an alias at a version (or remove it with --delete)."""
    if delete:
        if url:
            with remote_client(url, home) as client:
                client.delete_alias(name, alias)
        else:
            from dockyard.security.principals import local_user
            from dockyard.services import changes

            changes.delete_alias(open_workspace(home), local_user(), name, alias)
        typer.echo(f"removed {name}@{alias}")
        return
    if version is None:
        raise typer.BadParameter("give the VERSION to point the alias at, or --delete")
    if url:
        with remote_client(url, home) as client:
            target = _ref(client.set_alias(name, alias, version))
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import changes

        target = changes.set_alias(open_workspace(home), local_user(), name, alias, version).ref
    typer.echo(f"{name}@{alias} → {target}")


@app.command("archive")
def archive_command(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    version: Annotated[int, typer.Argument(help="Version number.")],
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Archive a version: it stays stored but is no longer served by default."""
    model = _model_name(name)
    if url:
        with remote_client(url, home) as client:
            archived = _ref(client.archive(model, version))
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import changes

        archived = changes.archive(open_workspace(home), local_user(), model, version).ref
    typer.echo(f"archived {archived}")


@app.command("unarchive")
def unarchive_command(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    version: Annotated[int, typer.Argument(help="Version number.")],
    home: HomeOption = None,
    url: UrlOption = None,
) -> None:
    """Unarchive a version: a bare model name may serve it again and aliases may point at it (a
    version that is not archived stays as it is)."""
    model = _model_name(name)
    if url:
        with remote_client(url, home) as client:
            live = _ref(client.unarchive(model, version))
    else:
        from dockyard.security.principals import local_user
        from dockyard.services import changes

        live = changes.unarchive(open_workspace(home), local_user(), model, version).ref
    typer.echo(f"unarchived {live}")


from dockyard.cli import model_cards, signing  # noqa: E402

app.command("sign")(signing.sign_command)
app.command("card")(model_cards.card_command)
