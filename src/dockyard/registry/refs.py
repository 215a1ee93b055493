"""Model references as users write them: ``fraud``, ``fraud@production``, ``fraud:3``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.errors import InvalidInput

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_ALIAS = "production"


@dataclass(frozen=True)
class ModelRef:
    """A model name plus at most one of a version number or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model or alias name, else raise InvalidInput saying why."""
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_ref(text: str) -> ModelRef:
    """Parse ``name``, ``name@alias`` or ``name:version``."""
    text = text.strip()
    if "@" in text:
        name, alias = text.split("@", 1)
        return ModelRef(check_name(name), alias=check_name(alias, "alias"))
    if ":" in text:
        name, version = text.split(":", 1)
        if not version.isdigit() or int(version) < 1:
            raise InvalidInput(f"invalid version in {text!r}: expected a positive integer")
        return ModelRef(check_name(name), version=int(version))
    return ModelRef(check_name(text))
