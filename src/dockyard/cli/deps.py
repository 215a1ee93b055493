"""``dockyard deps``: audit the serving environment and each model's recorded packages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dockyard.cli.options import HomeOption, open_workspace
from dockyard.errors import NotReady

if TYPE_CHECKING:
    from rich.table import Table

    from dockyard.security.dependencies import Finding

app = typer.Typer(help="Audit dependencies against known vulnerabilities.", no_args_is_help=True)

# pip-audit exits 1 on findings, like on errors; a code of its own tells "found" from "failed".
EXIT_VULNERABLE = 11
NO_SOURCE = (
    "no advisory source: pip-audit is not installed or cannot reach its service; "
    "pass --advisories FILE (OSV JSON)"
)


@dataclass(frozen=True)
class Target:
    """One thing audited: the serving environment, or the packages a model version recorded."""

    label: str
    kind: str
    packages: Mapping[str, str]
    archived: bool = False


@app.command("audit")
def audit_command(
    advisories: Annotated[
        Path | None,
        typer.Option(
            "--advisories",
            help="OSV advisory file (an object, a list, or JSON Lines); default: pip-audit.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Check the environment and every model version's recorded packages for known vulnerabilities.

    Exit codes: 0 nothing found, 11 vulnerabilities found, 2 unreadable advisory file,
    7 no advisory source (pip-audit missing or offline, and no --advisories).
    """
    from dockyard.security.dependencies import load_advisories, pip_audit_targets

    # Read the file before anything else: a bad one is refused before the registry is opened.
    loaded = load_advisories(advisories) if advisories is not None else None
    targets = _targets(home)
    if loaded is not None:
        source = f"advisory file {advisories}"
        findings = {target.label: loaded.findings(target.packages) for target in targets}
    else:
        source = "pip-audit"
        audited = pip_audit_targets({target.label: target.packages for target in targets})
        if audited is None:
            raise NotReady(NO_SOURCE)
        findings = audited
    if as_json:
        typer.echo(json.dumps(_report(source, targets, findings), indent=2))
    else:
        _print(source, targets, findings)
    if any(findings.values()):
        raise typer.Exit(EXIT_VULNERABLE)


def _targets(home: Path | None) -> list[Target]:
    """The environment first, then every version (archived ones too: they can still be served)."""
    from dockyard.security.dependencies import environment_packages

    targets = [Target("environment", "environment", environment_packages())]
    store = open_workspace(home).store
    for model in store.list_models():
        for version in store.list_versions(model.name):
            targets.append(
                Target(version.ref, "model_version", version.lineage.packages, version.archived)
            )
    return targets


def _report(
    source: str, targets: list[Target], findings: Mapping[str, list[Finding]]
) -> dict[str, Any]:
    return {
        "source": source,
        "vulnerabilities": sum(len(found) for found in findings.values()),
        "targets": [
            {
                "target": target.label,
                "kind": target.kind,
                "archived": target.archived,
                "packages": len(target.packages),
                "findings": [finding.to_dict() for finding in findings[target.label]],
            }
            for target in targets
        ],
    }


def _print(source: str, targets: list[Target], findings: Mapping[str, list[Finding]]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    for target in targets:
        found = findings[target.label]
        archived = " (archived)" if target.archived else ""
        heading = Text(f"{target.label}{archived}: {_count(len(target.packages), 'package')}, ")
        heading.append(
            _count(len(found), "vulnerability", "vulnerabilities") if found else "nothing known",
            style="bold red" if found else "green",
        )
        console.print(heading)
        if found:
            console.print(_table(found))
    total = sum(len(found) for found in findings.values())
    affected = sum(1 for found in findings.values() if found)
    console.print(
        Text(
            f"{_count(total, 'vulnerability', 'vulnerabilities')} in "
            f"{_count(affected, 'target')} ({len(targets)} audited; source: {source})"
        )
    )


def _table(found: list[Finding]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table("package", "version", "advisory", "fixed in")
    for finding in found:
        # Text, not str: an advisory file's contents must not be read as Rich markup.
        table.add_row(
            Text(finding.package),
            Text(finding.version),
            Text(finding.advisory_id, no_wrap=True),
            Text(", ".join(finding.fixed_versions) or "-"),
        )
    return table


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else (many or one + 's')}"
