"""Options every command shares, and turning them into Settings and a Workspace.

Every command module imports this one at start-up, for ``dockyard --help`` too: it stays light
(typer and the settings); the Workspace (SQLAlchemy, the runtimes, ...) is imported when a command
opens one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dockyard.config import Settings, load_settings

if TYPE_CHECKING:
    from dockyard.services.workspace import Workspace

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Dockyard home folder (default: $DOCKYARD_HOME or ~/.dockyard).",
        show_default=False,
    ),
]

LimitOption = Annotated[int, typer.Option("--limit", help="Show at most the newest N.")]
JsonListOption = Annotated[bool, typer.Option("--json", help="One JSON list instead of a table.")]


def settings_from(**flags: Any) -> Settings:
    """Settings with these command-line flags on top (None means the flag was not given)."""
    return load_settings(flags)


_opened = contextlib.ExitStack()
"""How to close what the running command opened (workspaces, registries): ``run`` closes it all
when the command ends, however it ends."""


def close_when_done(close: Callable[[], object]) -> None:
    """Call ``close`` when the running command ends."""
    _opened.callback(close)


def close_opened() -> None:
    """Close what the command opened (``run``, once the command has ended)."""
    _opened.close()


def open_workspace(home: Path | None, **flags: Any) -> Workspace:
    """The workspace of ``home`` (other command-line ``flags`` on top), closed when the running
    command ends."""
    from dockyard.services.workspace import Workspace

    workspace = Workspace.open(settings_from(home=home, **flags))
    close_when_done(workspace.close)
    return workspace


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``key=value`` options as a dict; a malformed one is a usage error naming it."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {pair!r} must look like key=value")
        result[key] = value
    return result
