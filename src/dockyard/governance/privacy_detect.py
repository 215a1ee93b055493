"""Which columns look like personal data: by their name (``email``, ``last_name``, ``dob``,
``iban``...) and by their values (emails, phone numbers, payment cards passing the Luhn check,
US social security and UK national insurance numbers, IBANs passing their check digits, IPv4
addresses, UK postcodes), so registration can flag them and promotion can ask for a rule each.

Values are read from the reference profile (the most frequent values of each text column), not
the reference data again: detection costs nothing at registration and sees what the profile
would have stored."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dockyard.registry.records import Signature

CONTENT_SHARE = 0.5
"""A text column looks personal when at least this share of its listed values is of one kind."""
CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
NOT_ALNUM = re.compile(r"[^a-z0-9]+")
PERSON_WORDS = frozenset(
    {
        "customer", "client", "patient", "person", "user", "holder", "cardholder", "employee",
        "contact", "member", "applicant", "borrower", "student", "owner", "beneficiary", "payee",
        "recipient", "sender", "driver", "account",
    }
)  # fmt: skip
NAME_WORDS = frozenset(
    {
        "name", "firstname", "lastname", "surname", "fullname", "forename", "forenames",
        "givenname", "familyname", "middlename", "maidenname", "username",
    }
)  # fmt: skip
NUMBER_WORDS = frozenset({"number", "num", "no", "nr"})
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"\d(?:[ -]?\d){12,18}")
US_SSN = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}")
UK_NINO = re.compile(
    r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
)
IBAN = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"{OCTET}(?:\.{OCTET}){{3}}")
UK_POSTCODE = re.compile(r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}")
PHONE_CHARS = re.compile(r"\+?[\d\s().-]+")
DIGIT_GROUPS = re.compile(r"\d+")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PHONE_DIGITS = (7, 15)


def personal_columns(signature: Signature, profile: Mapping[str, Any] | None) -> dict[str, str]:
    """Input feature → the kind of personal data it looks like (``email``, ``phone``, ``card``,
    ...), for each input that looks personal by its name or, for text columns, by the values the
    reference ``profile`` lists (None: by name only)."""
    features = (profile or {}).get("features", {})
    found = {}
    for spec in signature.inputs:
        kind = kind_by_name(spec.name)
        entry = features.get(spec.name)
        if kind is None and entry is not None and entry.get("kind") == "categorical":
            kind = kind_by_content(entry.get("values", []))
        if kind is not None:
            found[spec.name] = kind
    return found


def kind_by_name(name: str) -> str | None:
    """The kind of personal data a column of this name holds, or None: ``customerEmail`` →
    ``email``, ``last_name`` → ``name``, ``DOB`` → ``birth_date``, ``zip`` → ``postcode``."""
    words = [word for word in NOT_ALNUM.split(CAMEL.sub("_", name).lower()) if word]
    joined = "".join(words)
    tokens = set(words)
    for kind, matches in NAME_RULES:
        if matches(tokens, joined):
            return kind
    return None


def _named(
    parts: tuple[str, ...] = (), words: tuple[str, ...] = ()
) -> Callable[[set[str], str], bool]:
    """A name rule: the name, its words joined, contains one of ``parts``, or one of ``words``
    is one of its words."""

    def matches(tokens: set[str], joined: str) -> bool:
        return any(part in joined for part in parts) or not tokens.isdisjoint(words)

    return matches


def _phone(tokens: set[str], joined: str) -> bool:
    if "phone" in joined or "msisdn" in joined or not tokens.isdisjoint({"tel", "fax"}):
        return True
    return joined == "mobile" or ("mobile" in tokens and not tokens.isdisjoint(NUMBER_WORDS))


def _card(tokens: set[str], joined: str) -> bool:
    if joined == "card" or "pan" in tokens:
        return True
    if any(part in joined for part in ("creditcard", "debitcard", "cardnumber", "ccnum")):
        return True
    return "card" in tokens and not tokens.isdisjoint(NUMBER_WORDS)


def _person_name(tokens: set[str], joined: str) -> bool:
    if joined in NAME_WORDS or "surname" in joined or "forename" in joined:
        return True
    return "name" in tokens and not tokens.isdisjoint(PERSON_WORDS)


NAME_RULES: tuple[tuple[str, Callable[[set[str], str], bool]], ...] = (
    ("email", _named(("email",), ("mail",))),
    ("ip_address", _named(("ipaddress",), ("ip",))),
    ("phone", _phone),
    (
        "national_id",
        _named(
            ("socialsecurity", "nationalid", "nationalinsurance", "taxid", "taxpayer", "nhsnumber"),
            ("ssn", "nino", "nin", "tin", "aadhaar", "personnummer"),
        ),
    ),
    ("passport", _named(("passport",))),
    ("card", _card),
    ("iban", _named(("iban", "accountnumber", "bankaccount", "acctnumber", "accountno"))),
    ("birth_date", _named(("birth",), ("dob", "born"))),
    ("postcode", _named(("postcode", "postalcode", "zipcode"), ("zip", "postal"))),
    ("address", _named(("address", "street"), ("addr",))),
    ("name", _person_name),
)
"""(kind, rule) in the order they are tried: an ``email_address`` is an email, not an
address."""


def kind_by_content(values: Sequence[Any]) -> str | None:
    """The kind of personal data most of ``values`` (texts) are, when that is at least
    ``CONTENT_SHARE`` of them; None otherwise."""
    texts = [value.strip() for value in values if isinstance(value, str) and value.strip()]
    if not texts:
        return None
    counts: dict[str, int] = {}
    for text in texts:
        kind = kind_of_value(text)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return None
    kind, count = max(counts.items(), key=lambda item: item[1])
    return kind if count >= CONTENT_SHARE * len(texts) else None


def kind_of_value(text: str) -> str | None:
    """The kind of personal data one value is (``email`` when it holds an address anywhere; the
    others when it is one), or None."""
    if EMAIL.search(text):
        return "email"
    if CARD.fullmatch(text) and is_card_number(text):
        return "card"
    upper = text.upper()
    if IBAN.fullmatch(upper.replace(" ", "")) and is_iban(upper):
        return "iban"
    if US_SSN.fullmatch(text) or UK_NINO.fullmatch(upper):
        return "national_id"
    if IPV4.fullmatch(text):
        return "ip_address"
    if is_phone_number(text):
        return "phone"
    if UK_POSTCODE.fullmatch(upper):
        return "postcode"
    return None


def is_card_number(text: str) -> bool:
    """Whether ``text`` (digits, maybe grouped by spaces or dashes) is 13-19 digits that pass
    the Luhn check and are not one digit repeated."""
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that payment card numbers pass."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_iban(text: str) -> bool:
    """Whether ``text`` (upper case, maybe grouped by spaces) passes the IBAN mod-97 check."""
    compact = text.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def is_phone_number(text: str) -> bool:
    """Whether ``text`` is written like a phone number: 7-15 digits, only digits, spaces, dots,
    dashes and parentheses, and either an international ``+`` prefix, three or more groups of
    digits, or a national number of 10-11 digits starting with 0. A date is not one."""
    if not PHONE_CHARS.fullmatch(text) or ISO_DATE.match(text):
        return False
    groups = DIGIT_GROUPS.findall(text)
    digits = sum(map(len, groups))
    if not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]:
        return False
    if text.startswith("+") or len(groups) >= 3:
        return True
    return len(groups) == 1 and text.startswith("0") and 10 <= digits <= 11
