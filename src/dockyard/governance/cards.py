"""Model cards: the structured description of a version that reviewers read before approving it
(intended use, limits, owners...), after Mitchell et al., "Model Cards for Model Reporting"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def missing_fields(card: Mapping[str, Any] | None, required: Sequence[str]) -> list[str]:
    """The ``required`` fields that ``card`` leaves absent or blank, in ``required``'s order."""
    card = card or {}
    return [name for name in required if not _filled(card.get(name))]


def _filled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | Sequence):
        return bool(value)
    return True
