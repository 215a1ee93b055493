"""Personal-data rules: ``[governance.personal_data.MODEL]`` of ``dockyard.toml`` (``FEATURE =
"drop" | "mask[:N]" | "hash" | "generalize[:N]" | "keep"``), checked once, and what registration
does with them: flag the columns that look personal and keep their values out of the profile.

Features are named as the prediction log names them (``input.<feature>``, without the prefix): a
tabular model's features, or a tensor model's named inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.governance.privacy_detect import personal_columns
from dockyard.registry.records import Signature
from dockyard.registry.refs import check_name

KEY = "personal_data"
ACTIONS = ("drop", "mask", "hash", "generalize", "keep")
FORMS = "drop, mask, mask:N (keep the last N characters), hash, generalize, generalize:N or keep"
MASK_KEEPS = 4
"""Characters ``mask`` leaves visible at the end of a value (a card's last four digits)."""
UNRULED = "hash"
"""What the log does to a column flagged as personal that has no rule yet."""
INPUT_PREFIX = "input."


@dataclass(frozen=True)
class Rule:
    """One feature's rule: ``action`` one of ``ACTIONS``; ``amount`` the ``N`` of ``mask:N``
    (characters kept) or ``generalize:N`` (bucket width for numbers, characters kept of text),
    None when not given."""

    action: str
    amount: float | None = None

    @property
    def text(self) -> str:
        """The rule as it is written in ``dockyard.toml``."""
        if self.amount is None:
            return self.action
        return f"{self.action}:{self.amount:g}"


def parse_rule(raw: Any, where: str) -> Rule:
    """The rule written as ``raw``; InvalidInput naming ``where`` (model and feature) and the
    forms allowed."""
    action, _, amount_text = raw.partition(":") if isinstance(raw, str) else ("", "", "")
    action = action.strip()
    amount = _amount(amount_text) if amount_text else None
    problem = None
    if action not in ACTIONS:
        problem = f"use one of {FORMS}"
    elif amount_text and action not in ("mask", "generalize"):
        problem = f"{action} takes no :N; use one of {FORMS}"
    elif amount_text and amount is None:
        problem = "N must be a finite number"
    elif action == "mask" and amount is not None and (amount < 0 or not amount.is_integer()):
        problem = "mask:N keeps N characters: N must be a whole number, 0 or more"
    elif action == "generalize" and amount is not None and amount <= 0:
        problem = "generalize:N needs N above 0 (a bucket width, or characters kept of text)"
    if problem is not None:
        raise InvalidInput(f"{where} = {raw!r}: {problem}")
    return Rule(action, amount)


def _amount(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def personal_data_rules(settings: Settings) -> dict[str, dict[str, Rule]]:
    """Every model's rules (model → feature → rule), checked: InvalidInput names the first wrong
    table, feature or rule. ``dockyard serve`` calls it before loading anything."""
    where = f"[governance] {KEY} of dockyard.toml"
    table = settings.governance.get(KEY, {})
    if not isinstance(table, Mapping):
        raise InvalidInput(
            f'{where} must be tables [governance.{KEY}.MODEL] of FEATURE = "rule" lines'
        )
    rules: dict[str, dict[str, Rule]] = {}
    for model, features in table.items():
        check_name(model, f"model name in {where}")
        section = f"[governance.{KEY}.{model}] of dockyard.toml"
        if not isinstance(features, Mapping):
            raise InvalidInput(f'{section} must be a table of FEATURE = "rule" lines')
        rules[model] = {
            feature: parse_rule(raw, f"{section}: {feature}") for feature, raw in features.items()
        }
    return rules


def column_rules(settings: Settings, model: str) -> Mapping[str, str]:
    """``model``'s rules, feature → rule text (``hash``, ``generalize:10``); empty when it has
    none. The whole personal-data table is checked (InvalidInput) on the way."""
    return {
        feature: rule.text for feature, rule in personal_data_rules(settings).get(model, {}).items()
    }


def screen_registration(
    settings: Settings, model: str, signature: Signature, profile: Mapping[str, Any] | None
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """For a version of ``model`` being registered: the columns that look personal (feature →
    kind, by name and by the values in its reference ``profile``) and the profile without the
    columns whose values must not be stored: each flagged one, unless its rule is ``keep``, and
    each one with a rule other than ``keep`` (listed under ``skipped``, with the reason)."""
    flagged = personal_columns(signature, profile)
    if profile is None:
        return flagged, None
    rules = personal_data_rules(settings).get(model, {})
    features = dict(profile.get("features", {}))
    skipped = dict(profile.get("skipped", {}))
    for feature in list(features):
        rule = rules.get(feature)
        if rule is not None and rule.action == "keep":
            continue
        if rule is None and feature not in flagged:
            continue
        reason = f"rule {rule.text}" if rule is not None else f"looks like {flagged[feature]}"
        del features[feature]
        skipped[INPUT_PREFIX + feature] = f"personal data ({reason}): its values are not stored"
    return flagged, {**profile, "features": features, "skipped": skipped}
