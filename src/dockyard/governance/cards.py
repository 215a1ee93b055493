"""Model cards: the structured description of a version that reviewers read before approving it
(intended use, limits, owners...), after Mitchell et al., "Model Cards for Model Reporting".

A card is a JSON object of ``CARD_FIELDS`` only: text fields, and ``owners`` a list of names. It is
checked here (``check_card``) before it is stored, read from a TOML, JSON or YAML file, updated
field by field, and shown beside the version's lineage (``card_document``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dockyard.errors import InvalidInput
from dockyard.registry.records import ModelVersion

CARD_FIELDS = (
    "intended_use",
    "out_of_scope_use",
    "training_data",
    "evaluation",
    "limitations",
    "ethical_considerations",
    "owners",
)
"""The card's sections, in the order they are shown."""
FIELD_TITLES = {
    "intended_use": "Intended use",
    "out_of_scope_use": "Out-of-scope use",
    "training_data": "Training data",
    "evaluation": "Evaluation",
    "limitations": "Limitations",
    "ethical_considerations": "Ethical considerations",
    "owners": "Owners",
}
OWNERS = "owners"
MAX_TEXT_CHARS = 20_000
"""The longest text field: a few pages, enough for a card, small enough to store in every row."""
MAX_OWNERS = 50
MAX_OWNER_CHARS = 256
MAX_FILE_BYTES = 1024 * 1024
CARD_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def missing_fields(card: Mapping[str, Any] | None, required: Sequence[str]) -> list[str]:
    """The ``required`` fields that ``card`` leaves absent or blank, in ``required``'s order."""
    card = card or {}
    return [name for name in required if not _filled(card.get(name))]


def check_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` as it is stored: known fields only, in ``CARD_FIELDS`` order, text fields strings
    of at most ``MAX_TEXT_CHARS``, ``owners`` a list of at most ``MAX_OWNERS`` non-blank names;
    blank fields are left out. InvalidInput names the first field that is wrong and how to fix
    it."""
    if not isinstance(card, Mapping):
        raise InvalidInput(f"a model card must be an object of fields: {', '.join(CARD_FIELDS)}")
    unknown = sorted(str(name) for name in card if name not in CARD_FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown model card field {unknown[0]!r}; the fields are: {', '.join(CARD_FIELDS)}"
        )
    checked: dict[str, Any] = {}
    for name in CARD_FIELDS:
        value = card.get(name)
        if value is None:
            continue
        value = _owners(value) if name == OWNERS else _text(name, value)
        if _filled(value):
            checked[name] = value
    return checked


def merge_card(card: Mapping[str, Any] | None, updates: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` with ``updates`` applied field by field (a blank value removes the field), checked
    as ``check_card`` does."""
    merged = {**(card or {}), **updates}
    return check_card({name: value for name, value in merged.items() if _filled(value)})


def field_updates(pairs: Mapping[str, str]) -> dict[str, Any]:
    """``FIELD=TEXT`` pairs (from the command line) as card fields: ``owners`` is a comma-separated
    list of names."""
    return {
        name: [part.strip() for part in text.split(",") if part.strip()] if name == OWNERS else text
        for name, text in pairs.items()
    }


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """The fields whose value differs between two cards (set, changed or removed), in order."""
    before = before or {}
    return [name for name in CARD_FIELDS if before.get(name) != after.get(name)]


def read_card_file(path: Path) -> dict[str, Any]:
    """The card a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file holds (its top level is the
    card's fields), checked; InvalidInput names the file and what is wrong with it."""
    suffix = path.suffix.lower()
    if suffix not in CARD_SUFFIXES:
        raise InvalidInput(
            f"model card file {path}: name it with one of {', '.join(CARD_SUFFIXES)} to say "
            "how it is written"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInput(
                f"model card file {path} is {size} bytes; the limit is {MAX_FILE_BYTES}"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read model card file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"model card file {path} is not UTF-8 text: {exc.reason}") from exc
    data = _parse(path, suffix, text)
    if not isinstance(data, Mapping):
        raise InvalidInput(
            f"model card file {path} must hold the card's fields at its top level "
            f"({', '.join(CARD_FIELDS)})"
        )
    try:
        return check_card(data)
    except InvalidInput as exc:
        raise InvalidInput(f"model card file {path}: {exc.message}") from None


def card_document(version: ModelVersion) -> dict[str, Any]:
    """What a card shows, as JSON: the version, its card's fields (and those it leaves blank),
    and its lineage: data fingerprint, code commit, parent version, environment, who and when."""
    stored = version.card or {}
    card = {name: stored[name] for name in CARD_FIELDS if name in stored}
    lineage = version.lineage
    return {
        "model": version.model,
        "version": version.version,
        "ref": version.ref,
        "description": version.description,
        "framework": version.framework,
        "artifact_sha256": version.artifact.digest,
        "card": card,
        "missing": missing_fields(card, CARD_FIELDS),
        "lineage": {
            "data_sha256": lineage.data_sha256,
            "data_rows": lineage.data_rows,
            "data_schema": dict(lineage.data_schema),
            "git_commit": lineage.git_commit,
            "parent": lineage.parent,
            "python_version": lineage.python_version,
            "packages": dict(lineage.packages),
            "created_by": version.created_by,
            "created_at": version.created_at.isoformat() if version.created_at else None,
        },
    }


def _parse(path: Path, suffix: str, text: str) -> Any:
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"model card file {path} is not valid TOML: {exc}") from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"model card file {path} is not valid JSON: {exc}") from exc
    import yaml  # only for a YAML card

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"model card file {path} is not valid YAML: {exc}") from exc


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"model card field {name!r} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInput(
            f"model card field {name!r} is {len(value)} characters long; the limit is "
            f"{MAX_TEXT_CHARS}"
        )
    if "\x00" in value:
        raise InvalidInput(f"model card field {name!r} holds a NUL character; remove it")
    return value


def _owners(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(owner, str) for owner in value):
        raise InvalidInput(
            "model card field 'owners' must be a list of names, e.g. "
            'owners = ["risk-team@example.com"]'
        )
    if len(value) > MAX_OWNERS:
        raise InvalidInput(
            f"model card field 'owners' lists {len(value)} owners; the limit is {MAX_OWNERS}"
        )
    for owner in value:
        if not owner.strip() or len(owner) > MAX_OWNER_CHARS or "\x00" in owner:
            raise InvalidInput(
                f"model card field 'owners': each owner must be 1 to {MAX_OWNER_CHARS} "
                f"characters, got {owner[:40]!r}"
            )
    return list(value)


def _filled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | Sequence):
        return bool(value)
    return True
