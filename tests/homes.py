"""Homes for the tests of serving, monitoring and the command line, which put ``production``
straight on a version: opened as a team without four-eyes rules would have it
(``[governance] protected_aliases = []``). The governance tests open homes with the default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dockyard.config import load_settings
from dockyard.services.workspace import Workspace

UNPROTECTED = {"protected_aliases": []}


def open_unprotected(home: Path, **flags: Any) -> Workspace:
    """``home`` opened with no protected alias (``flags``: other settings, as ``load_settings``
    takes them)."""
    settings = load_settings({"home": home, **flags}, env={})
    return Workspace.open(dataclasses.replace(settings, governance=UNPROTECTED))
