"""Personal data found at registration and the rules of ``[governance.personal_data.MODEL]``:
columns flagged by name and by content (Luhn-checked cards, IBAN check digits, phone and id
formats, without flagging look-alikes), rules parsed or refused with the model, feature and rule
named, and a registration's profile left without the values of personal columns."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from dockyard.config import Settings, load_settings
from dockyard.errors import InvalidInput
from dockyard.governance.privacy import (
    Rule,
    column_rules,
    parse_rule,
    personal_data_rules,
    screen_registration,
)
from dockyard.governance.privacy_detect import (
    is_card_number,
    kind_by_content,
    kind_by_name,
    kind_of_value,
    luhn_valid,
    personal_columns,
)
from dockyard.monitoring.profile import capture_profile
from dockyard.registry.signatures import infer_signature
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace

VALID_CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000990139424"]


def settings_with(personal_data: Any) -> Settings:
    settings = load_settings({"home": Path("unused")}, env={})
    return dataclasses.replace(settings, governance={"personal_data": personal_data})


def with_luhn_digit(stem: str) -> str:
    """``stem`` and the check digit that makes it pass the Luhn check."""
    return next(stem + digit for digit in "0123456789" if luhn_valid(stem + digit))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("email", "email"),
        ("customerEmail", "email"),
        ("email_address", "email"),
        ("phone", "phone"),
        ("mobile_number", "phone"),
        ("first_name", "name"),
        ("LastName", "name"),
        ("surname", "name"),
        ("customer_name", "name"),
        ("name", "name"),
        ("ssn", "national_id"),
        ("national_insurance_no", "national_id"),
        ("passport_number", "passport"),
        ("home_address", "address"),
        ("street", "address"),
        ("postcode", "postcode"),
        ("zip", "postcode"),
        ("DOB", "birth_date"),
        ("date_of_birth", "birth_date"),
        ("card_number", "card"),
        ("creditCard", "card"),
        ("iban", "iban"),
        ("bank_account", "iban"),
        ("client_ip", "ip_address"),
    ],
    ids=lambda value: str(value),
)
def test_a_column_looks_personal_by_its_name(name: str, kind: str) -> None:
    assert kind_by_name(name) == kind


@pytest.mark.parametrize(
    "name",
    ["amount", "country", "product_name", "classname", "card_type", "mobile_app", "adobe_id", "x0"],
    ids=lambda value: str(value),
)
def test_names_that_only_look_alike_are_not_flagged(name: str) -> None:
    assert kind_by_name(name) is None


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("alice@example.com", "email"),
        ("write to bob.jones+tag@mail.example.co.uk please", "email"),
        *((card, "card") for card in VALID_CARDS),
        ("+44 20 7946 0958", "phone"),
        ("(415) 555-0123", "phone"),
        ("020 7946 0958", "phone"),
        ("07946095800", "phone"),
        ("123-45-6789", "national_id"),
        ("AB 12 34 56 C", "national_id"),
        ("GB82 WEST 1234 5698 7654 32", "iban"),
        ("192.168.0.1", "ip_address"),
        ("SW1A 1AA", "postcode"),
        ("EC1A1BB", "postcode"),
    ],
    ids=lambda value: str(value),
)
def test_a_value_is_recognised(value: str, kind: str) -> None:
    assert kind_of_value(value) == kind


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1112",  # one digit off: fails the Luhn check
        "0000 0000 0000 0000",  # passes Luhn, but no card is one digit repeated
        "411111111111",  # 12 digits: too short for a card
        "GB83 WEST 1234 5698 7654 32",  # IBAN check digits wrong
        "1985-03-14",  # a date, not a phone number
        "1234567.89",  # a number
        "12 34",  # too few digits for a phone
        "hello world",
        "user at example dot com",
    ],
    ids=lambda value: str(value),
)
def test_look_alikes_are_not_recognised(value: str) -> None:
    assert kind_of_value(value) is None


def test_the_luhn_check() -> None:
    assert all(is_card_number(card) for card in VALID_CARDS)
    stem = "453914880343001"
    good = with_luhn_digit(stem)
    assert luhn_valid(good)
    assert not any(luhn_valid(stem + digit) for digit in "0123456789" if stem + digit != good)


def test_a_column_of_random_16_digit_ids_is_not_taken_for_cards() -> None:
    """A tenth of random numbers pass the Luhn check: too few for a column of card numbers."""
    rng = random.Random(4)
    ids = ["".join(rng.choice("0123456789") for _ in range(16)) for _ in range(200)]
    passing = sum(map(is_card_number, ids))
    assert 0 < passing < 0.3 * len(ids)
    assert kind_by_content(ids) is None
    cards = [with_luhn_digit(f"4{rng.randrange(10**14):014d}") for _ in range(10)]
    assert kind_by_content(cards + ids[:5]) == "card"


def test_content_needs_half_of_the_values() -> None:
    emails = [f"user{i}@example.org" for i in range(5)]
    assert kind_by_content(emails + ["n/a"] * 4) == "email"
    assert kind_by_content(emails[:2] + ["red", "green", "blue"]) is None
    assert kind_by_content(["", "  ", None]) is None


def frame() -> pd.DataFrame:
    rows = 60
    return pd.DataFrame(
        {
            "amount": np.linspace(1, 600, rows),
            "country": ["FR", "DE", "UK"] * (rows // 3),
            "customer_name": [f"Customer {i}" for i in range(rows)],
            "contact": [f"person{i}@example.org" for i in range(rows)],
            "ref": [f"{i:016d}" for i in range(rows)],
            "card": [with_luhn_digit(f"411111111111{i:03d}") for i in range(rows)],
        }
    )


def test_personal_columns_by_name_and_by_the_profiled_values() -> None:
    data = frame()
    signature = infer_signature(data, {}, tabular=True)
    profile = capture_profile(data, signature, {})

    assert personal_columns(signature, profile) == {
        "customer_name": "name",
        "contact": "email",
        "card": "card",
    }
    # Without reference data, names are all there is to go by.
    assert personal_columns(signature, None) == {"customer_name": "name", "card": "card"}


def test_registration_keeps_personal_values_out_of_the_profile() -> None:
    data = frame()
    signature = infer_signature(data, {}, tabular=True)
    profile = capture_profile(data, signature, {})
    settings = settings_with({"fraud": {"card": "mask", "country": "generalize:1", "ref": "keep"}})

    flagged, screened = screen_registration(settings, "fraud", signature, profile)

    assert flagged == {"customer_name": "name", "contact": "email", "card": "card"}
    assert screened is not None
    assert set(screened["features"]) == {"amount", "ref"}
    assert screened["skipped"] == {
        "input.customer_name": "personal data (looks like name): its values are not stored",
        "input.contact": "personal data (looks like email): its values are not stored",
        "input.card": "personal data (rule mask): its values are not stored",
        "input.country": "personal data (rule generalize:1): its values are not stored",
    }
    text = json.dumps(screened)
    assert not any(value in text for value in [*data["contact"], *data["customer_name"]])
    assert "person0@example.org" in json.dumps(profile)  # what would have been stored
    # A keep rule on a flagged column keeps it profiled.
    keep = settings_with({"fraud": {"contact": "keep"}})
    assert "contact" in screen_registration(keep, "fraud", signature, profile)[1]["features"]  # type: ignore[index]


def test_a_registered_version_records_its_personal_columns(home: Path) -> None:
    data = frame()
    reference = pd.DataFrame({"amount": data["amount"], "email": data["contact"]})
    pipeline = make_pipeline(
        make_column_transformer(("passthrough", ["amount"])), LogisticRegression()
    ).fit(reference, (data["amount"] > 300).astype(int))
    settings = load_settings({"home": home}, env={})
    rules = {"personal_data": {"fraud": {"email": "hash"}}}
    workspace = Workspace.open(dataclasses.replace(settings, governance=rules))

    version = register(workspace, pipeline, Registration("fraud", reference_data=reference))

    stored = workspace.store.get_version("fraud", version.version)
    assert version.personal_data == stored.personal_data == {"email": "email"}
    assert stored.profile is not None
    assert set(stored.profile["features"]) == {"amount"}
    assert "person1@example.org" not in json.dumps(stored.to_dict())


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("drop", Rule("drop")),
        ("keep", Rule("keep")),
        ("hash", Rule("hash")),
        ("mask", Rule("mask")),
        ("mask:2", Rule("mask", 2)),
        ("mask:0", Rule("mask", 0)),
        ("generalize", Rule("generalize")),
        ("generalize:0.5", Rule("generalize", 0.5)),
        ("generalize:10", Rule("generalize", 10)),
    ],
    ids=lambda value: str(value),
)
def test_a_rule_is_parsed(raw: str, rule: Rule) -> None:
    assert parse_rule(raw, "here") == rule
    assert parse_rule(rule.text, "here") == rule


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("encrypt", "use one of drop, mask, mask:N"),
        ("hash:3", "hash takes no :N"),
        ("mask:-1", "N must be a whole number, 0 or more"),
        ("mask:1.5", "N must be a whole number, 0 or more"),
        ("generalize:0", "needs N above 0"),
        ("generalize:ten", "N must be a finite number"),
        ("generalize:inf", "N must be a finite number"),
        (3, "use one of drop"),
    ],
    ids=lambda value: str(value),
)
def test_a_wrong_rule_names_the_model_the_feature_and_the_rule(raw: Any, problem: str) -> None:
    settings = settings_with({"fraud": {"email": raw}})
    with pytest.raises(InvalidInput) as caught:
        column_rules(settings, "other")
    assert caught.value.message.startswith(
        f"[governance.personal_data.fraud] of dockyard.toml: email = {raw!r}: "
    )
    assert problem in caught.value.message


def test_the_rules_table_must_be_tables_of_models() -> None:
    with pytest.raises(InvalidInput, match=r"must be tables \[governance.personal_data.MODEL\]"):
        personal_data_rules(settings_with(["email"]))
    with pytest.raises(InvalidInput, match=r"personal_data.fraud\] of dockyard.toml must be a"):
        personal_data_rules(settings_with({"fraud": "hash"}))
    with pytest.raises(InvalidInput, match="model name"):
        personal_data_rules(settings_with({"no/such": {"email": "hash"}}))


def test_column_rules_are_the_model_s_rules_as_written() -> None:
    settings = settings_with(
        {"fraud": {"email": "hash", "zip": "generalize:3", "card": "mask"}, "churn": {"x": "drop"}}
    )
    assert column_rules(settings, "fraud") == {
        "email": "hash",
        "zip": "generalize:3",
        "card": "mask",
    }
    assert column_rules(settings, "churn") == {"x": "drop"}
    assert column_rules(settings, "other") == {}
    assert column_rules(load_settings({"home": Path("unused")}, env={}), "fraud") == {}
