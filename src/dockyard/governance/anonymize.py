"""The personal-data rules applied to the prediction log's rows before they are written: the
``protect`` callable each worker's ``PredictionLog`` is handed (monitoring cannot import
governance), run by the log's writer thread on each segment's table, off the hot path.

Per column ``input.<feature>``: ``drop`` leaves it out, ``mask`` keeps the last N characters
behind a fixed ``****`` (``mask:0``: nothing), ``hash`` writes the value's keyed pseudonym
(``governance.pseudonyms``), ``generalize`` buckets numbers (width N, default 10), truncates
dates and times to the month, ISO date text to ``YYYY-MM``, and other text to N characters or,
without N, a postcode to its outward part (the text before a space; a UK postcode without its
last three characters; else the first three). Numbers masked or hashed are taken as their
decimal text. A tensor of several values per row (a list column) has each value treated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.governance.privacy import (
    INPUT_PREFIX,
    MASK_KEEPS,
    UNRULED,
    Rule,
    personal_data_rules,
)
from dockyard.governance.privacy_detect import ISO_DATE, UK_POSTCODE
from dockyard.governance.pseudonyms import Pseudonymizer, open_pseudonymizer
from dockyard.home import Home
from dockyard.registry.records import ModelVersion

MASK = "****"
BUCKET_WIDTH = 10.0
"""``generalize`` on numbers without N."""
OUTWARD_CHARS = 3
"""``generalize`` on text that is neither a date nor a spaced or UK postcode keeps this many."""


class Anonymizer:
    """One version's rules compiled for its log columns (the ``keep`` ones left out)."""

    def __init__(
        self, rules: Mapping[str, Rule], where: str, pseudonym: Callable[[str], str] | None
    ) -> None:
        """``rules``: log column → rule; ``where`` names the version in errors; ``pseudonym``
        (needed when a rule is ``hash``) gives a text's pseudonym."""
        self._rules = dict(rules)
        self._where = where
        self._pseudonym = pseudonym

    def __call__(self, table: pa.Table) -> pa.Table:
        """``table`` (a segment's rows) with every rule applied to its columns."""
        for name, rule in self._rules.items():
            index = table.schema.get_field_index(name)
            if index < 0:
                continue
            if rule.action == "drop":
                table = table.remove_column(index)
            else:
                column = table.column(index).combine_chunks()
                table = table.set_column(index, name, self._protected(name, rule, column))
        return table

    def _protected(self, column: str, rule: Rule, values: pa.Array) -> pa.Array:
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            inner = self._protected(column, rule, values.values)
            lists = pa.LargeListArray if pa.types.is_large_list(values.type) else pa.ListArray
            return lists.from_arrays(values.offsets, inner, mask=values.is_null())
        if rule.action == "generalize":
            return self._generalized(column, rule, values)
        transform: Callable[[str], str]
        if rule.action == "hash":
            assert self._pseudonym is not None  # given whenever a rule is hash
            transform = self._pseudonym
        else:
            keep = MASK_KEEPS if rule.amount is None else int(rule.amount)
            transform = functools.partial(_masked, keep=keep)
        return _per_distinct(_texts(values), transform)

    def _generalized(self, column: str, rule: Rule, values: pa.Array) -> pa.Array:
        kind = values.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            width = BUCKET_WIDTH if rule.amount is None else rule.amount
            numbers = pc.cast(values, pa.float64()) if pa.types.is_integer(kind) else values
            buckets = pc.multiply(pc.floor(pc.divide(numbers, width)), width)
            if pa.types.is_integer(kind) and float(width).is_integer():
                return pc.cast(buckets, kind)
            return buckets
        if pa.types.is_temporal(kind) and not pa.types.is_time(kind):
            return pc.floor_temporal(values, unit="month")
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if rule.amount is not None and not rule.amount.is_integer():
                raise InvalidInput(
                    f"{self._where}: {column.removeprefix(INPUT_PREFIX)} = {rule.text} keeps "
                    "characters of text: N must be a whole number"
                )
            chars = None if rule.amount is None else int(rule.amount)
            return _per_distinct(values, functools.partial(_general_text, chars=chars))
        raise InvalidInput(
            f"{self._where}: {column.removeprefix(INPUT_PREFIX)} = {rule.text}: generalize applies "
            f"to numbers, dates and text, not {kind}; use drop, mask, hash or keep"
        )


def _per_distinct(texts: pa.Array, transform: Callable[[str], str]) -> pa.Array:
    """``transform`` of each text (nulls kept), called once per distinct text: requests repeat
    the same values (a customer's email in each of their rows)."""
    encoded = texts.dictionary_encode()
    distinct = [transform(text) for text in encoded.dictionary.to_pylist()]
    mapped = pa.DictionaryArray.from_arrays(encoded.indices, pa.array(distinct, pa.string()))
    return mapped.dictionary_decode()


def _texts(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    return pc.cast(values, pa.string())


def _masked(text: str, keep: int) -> str:
    """``****`` and the last ``keep`` characters, or only ``****`` when that would show half of
    ``text`` or more: a fixed width, so the mask does not tell the length."""
    if keep and len(text) > 2 * keep:
        return MASK + text[-keep:]
    return MASK


def _general_text(text: str, chars: int | None) -> str:
    if ISO_DATE.match(text):
        return text[:7]
    if chars is not None:
        return text[:chars]
    outward, space, _ = text.strip().partition(" ")
    if space:
        return outward
    if UK_POSTCODE.fullmatch(text.upper()):
        return text[:-3]
    return text[:OUTWARD_CHARS]


class LogProtection:
    """The rules of every model, applied by version: its model's rules, and ``hash`` for each
    column flagged as personal at registration that has no rule yet. Called by one writer
    thread at a time (not thread-safe); compiled once per version."""

    def __init__(self, settings: Settings, home: Home) -> None:
        """Reads (and checks: InvalidInput) the rules now; the pseudonym key only when a rule
        first needs it."""
        self._settings = settings
        self._home = home
        self._rules = personal_data_rules(settings)
        self._pseudonymizer: Pseudonymizer | None = None
        self._compiled: dict[tuple[str, int], Anonymizer | None] = {}

    def __call__(self, version: ModelVersion, table: pa.Table) -> pa.Table:
        """``table``, rows ``version`` answered, as the log may store them."""
        key = (version.model, version.version)
        if key not in self._compiled:
            self._compiled[key] = self._compile(version)
        anonymizer = self._compiled[key]
        return table if anonymizer is None else anonymizer(table)

    def _compile(self, version: ModelVersion) -> Anonymizer | None:
        """``version``'s rules for its log columns; None when all are ``keep``."""
        rules: dict[str, Rule] = dict(self._rules.get(version.model, {}))
        for feature in version.personal_data or {}:
            rules.setdefault(feature, Rule(UNRULED))
        active = {
            INPUT_PREFIX + name: rule for name, rule in rules.items() if rule.action != "keep"
        }
        if not active:
            return None
        pseudonym = None
        if any(rule.action == "hash" for rule in active.values()):
            pseudonym = self._pseudonyms()
        return Anonymizer(active, version.ref, pseudonym)

    def _pseudonyms(self) -> Pseudonymizer:
        if self._pseudonymizer is None:
            self._pseudonymizer = open_pseudonymizer(self._settings, self._home)
        return self._pseudonymizer
