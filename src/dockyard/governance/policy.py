"""The governance policy: the ``[governance]`` table of ``dockyard.toml`` checked and parsed once,
so a mistake in it stops ``dockyard serve`` (and every command that reads it) with one line naming
the key, rather than letting a version through a gate that was never read."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.governance.cards import CARD_FIELDS
from dockyard.registry.refs import check_name
from dockyard.runtimes.detect import FRAMEWORK_MODULES

WHERE = "[governance] of dockyard.toml"
DEFAULT_PROTECTED = ("production",)
DEFAULT_CARD_FIELDS = ("intended_use", "limitations", "owners")
PRIVACY_KEYS = frozenset({"personal_data", "retention"})
"""Keys parsed by ``dockyard.governance.privacy`` (personal-data rules, retention), not here."""
KEYS = frozenset(
    {
        "protected_aliases",
        "required_card_fields",
        "metric_gates",
        "challenger_beats_champion",
        "allowed_frameworks",
        "allowed_formats",
        "require_signature",
    }
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
GATE_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(>=|<=|==|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class MetricGate:
    """``metric op threshold`` on a version's recorded metrics, such as ``auc >= 0.8``."""

    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: Any) -> MetricGate:
        """A gate from its text; InvalidInput naming it and the form expected."""
        match = GATE_PATTERN.match(text) if isinstance(text, str) else None
        threshold = _number(match.group(3)) if match else None
        if match is None or threshold is None:
            raise InvalidInput(
                f'{WHERE}: metric_gates entry {text!r} must look like "auc >= 0.8" (a metric, '
                f"one of {' '.join(OPERATORS)}, a finite number)"
            )
        return cls(match.group(1), match.group(2), threshold)

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Policy:
    """What a version must show before a protected alias points at it (``governance.gates``
    checks it), and which aliases are protected (moved only by an approved promotion)."""

    protected_aliases: tuple[str, ...] = DEFAULT_PROTECTED
    required_card_fields: tuple[str, ...] = DEFAULT_CARD_FIELDS
    metric_gates: tuple[MetricGate, ...] = ()
    challenger_beats_champion: bool = False
    allowed_frameworks: tuple[str, ...] = ()
    """Empty: any framework."""
    allowed_formats: tuple[str, ...] = ()
    """Empty: any stored format (``skops``, ``pickle``, ``onnx``, ...)."""
    require_signature: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy of ``settings.governance``, defaults for what it leaves out; InvalidInput
        naming the first unknown key or wrong value."""
        table: Mapping[str, Any] = settings.governance
        unknown = sorted(key for key in table if key not in KEYS | PRIVACY_KEYS)
        if unknown:
            known = ", ".join(sorted(KEYS | PRIVACY_KEYS))
            raise InvalidInput(f"{WHERE}: unknown key {unknown[0]!r}; the keys are: {known}")
        cards = _names(table, "required_card_fields", DEFAULT_CARD_FIELDS)
        for name in cards:
            if name not in CARD_FIELDS:
                raise InvalidInput(
                    f"{WHERE}: required_card_fields names {name!r}, which is not a card field; "
                    f"the fields are: {', '.join(CARD_FIELDS)}"
                )
        frameworks = _names(table, "allowed_frameworks", ())
        for name in frameworks:
            if name not in FRAMEWORK_MODULES:
                raise InvalidInput(
                    f"{WHERE}: allowed_frameworks names {name!r}, which is not a framework; "
                    f"the frameworks are: {', '.join(FRAMEWORK_MODULES)}"
                )
        gates = _names(table, "metric_gates", ())
        return cls(
            protected_aliases=tuple(
                check_name(alias, f"alias in {WHERE} protected_aliases")
                for alias in _names(table, "protected_aliases", DEFAULT_PROTECTED)
            ),
            required_card_fields=cards,
            metric_gates=tuple(MetricGate.parse(text) for text in gates),
            challenger_beats_champion=_flag(table, "challenger_beats_champion"),
            allowed_frameworks=frameworks,
            allowed_formats=_names(table, "allowed_formats", ()),
            require_signature=_flag(table, "require_signature"),
        )

    def is_protected(self, alias: str) -> bool:
        return alias in self.protected_aliases


def _names(table: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = table.get(key, default)
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise InvalidInput(f"{WHERE}: {key} must be a list of non-empty strings, got {value!r}")
    return tuple(item.strip() for item in value)


def _flag(table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{WHERE}: {key} must be true or false, got {value!r}")
    return value


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
