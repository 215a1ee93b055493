"""Each personal-data rule applied to the prediction log's rows, on real tables and real segment
files: drop, mask, hash (keyed, stable across restarts, the key a 0600 or sealed home secret),
generalize (numbers, dates, postcodes), keep; a column flagged at registration without a rule is
hashed; a table that cannot be protected is shed, never written as it came."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import stat
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dockyard.config import Settings, load_settings
from dockyard.encryption import open_cipher
from dockyard.errors import DockyardError, InvalidInput
from dockyard.governance.anonymize import LogProtection
from dockyard.governance.pseudonyms import KEY_NAME, open_pseudonymizer
from dockyard.home import Home
from dockyard.monitoring.predlog import PredictionLog, read_predictions
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from registry.conftest import DIGEST, LINEAGE

EMAILS = ["alice@example.com", "bob@example.org", None, "alice@example.com"]
CARDS = ["4111 1111 1111 1111", "5500000000000004", "1234", None]
SIGNATURE = Signature(
    inputs=(
        TensorSpec("email", "BYTES", (-1,)),
        TensorSpec("card", "BYTES", (-1,)),
        TensorSpec("amount", "FP64", (-1,)),
    ),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
    tabular=True,
)


def version_of(personal_data: dict[str, str] | None = None, number: int = 1) -> ModelVersion:
    return ModelVersion(
        model="fraud",
        version=number,
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=SIGNATURE,
        lineage=LINEAGE,
        personal_data=personal_data,
    )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def settings_for(home: Home, rules: dict[str, Any], **flags: Any) -> Settings:
    settings = load_settings({"home": home.root, **flags}, env={})
    return dataclasses.replace(settings, governance={"personal_data": {"fraud": rules}})


def pseudonym(home: Home, text: str) -> str:
    """``text``'s pseudonym under ``home``'s key: what the ``hash`` rule writes."""
    return open_pseudonymizer(settings_for(home, {}), home)(text)


def protect(home: Home, rules: dict[str, Any], table: pa.Table, **flags: Any) -> pa.Table:
    protection = LogProtection(settings_for(home, rules, **flags), home)
    result: pa.Table = protection(version_of(), table)
    return result


def column(home: Home, rule: str, values: list[Any], kind: pa.DataType | None = None) -> list[Any]:
    """``values`` as column ``input.x`` holds them under ``rule``."""
    table = pa.table({"request_id": ["r"] * len(values), "input.x": pa.array(values, kind)})
    protected = protect(home, {"x": rule}, table)
    assert protected.column_names == ["request_id", "input.x"]
    return protected.column("input.x").to_pylist()


def test_drop_leaves_the_column_out(home: Home) -> None:
    table = pa.table({"input.email": EMAILS, "input.amount": [1.0, 2.0, 3.0, 4.0]})
    protected = protect(home, {"email": "drop"}, table)
    assert protected.column_names == ["input.amount"]


def test_mask_keeps_the_end_behind_a_fixed_width(home: Home) -> None:
    assert column(home, "mask", CARDS) == ["****1111", "****0004", "****", None]
    assert column(home, "mask:2", ["alice@example.com", "abcd"]) == ["****om", "****"]
    assert column(home, "mask:0", ["alice@example.com"]) == ["****"]
    assert column(home, "mask", [4111111111111111], pa.int64()) == ["****1111"]


def test_hash_is_a_keyed_pseudonym_stable_across_restarts(home: Home) -> None:
    first = column(home, "hash", EMAILS)
    again = column(home, "hash", EMAILS)  # a new LogProtection: as after a restart

    assert first == again
    assert first[0] == first[3] != first[1]
    assert first[2] is None
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in first if value)
    # Not the plain hash anyone could compute from a guess.
    assert hashlib.sha256(b"alice@example.com").hexdigest()[:32] != first[0]
    key = home.secrets / KEY_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    # Another home, another key: other pseudonyms.
    other = Home(home.root.parent / "other").ensure()
    assert column(other, "hash", EMAILS) != first


def test_the_key_is_sealed_when_the_home_has_an_encryption_key(home: Home) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    settings = settings_for(home, {}, encryption_key=key)
    pseudonym = open_pseudonymizer(settings, home)("alice@example.com")

    sealed = home.secrets / f"{KEY_NAME}.sealed"
    assert not (home.secrets / KEY_NAME).exists()
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    raw = open_cipher(home.secrets, key).decrypt(sealed.read_bytes(), sealed.name.encode())
    assert len(raw) == 32
    assert raw not in sealed.read_bytes()
    assert open_pseudonymizer(settings, home)("alice@example.com") == pseudonym
    other_key = base64.b64encode(bytes(32)).decode()
    with pytest.raises(DockyardError, match="not among the configured keys"):
        open_pseudonymizer(settings_for(home, {}, encryption_key=other_key), home)


def test_generalize_buckets_numbers_and_truncates_dates_and_postcodes(home: Home) -> None:
    assert column(home, "generalize", [3.0, 17.5, -2.0, None]) == [0.0, 10.0, -10.0, None]
    assert column(home, "generalize:0.5", [0.74, 1.2]) == [0.5, 1.0]
    assert column(home, "generalize:5", [12, 19, 42], pa.int64()) == [10, 15, 40]
    assert column(home, "generalize", ["1985-03-14", "2001-12-31T23:59:59"]) == [
        "1985-03",
        "2001-12",
    ]
    assert column(home, "generalize", ["SW1A 1AA", "EC1A1BB", "94103"]) == ["SW1A", "EC1A", "941"]
    assert column(home, "generalize:2", ["SW1A 1AA", "1985-03-14"]) == ["SW", "1985-03"]
    when = datetime(1985, 3, 14, 10, 30, tzinfo=UTC)
    assert column(home, "generalize", [when], pa.timestamp("us", tz="UTC")) == [
        datetime(1985, 3, 1, tzinfo=UTC)
    ]
    assert column(home, "generalize", [date(1985, 3, 14)]) == [date(1985, 3, 1)]


def test_generalize_refuses_what_it_cannot_generalize(home: Home) -> None:
    with pytest.raises(InvalidInput, match="fraud:1: x = generalize: generalize applies to"):
        column(home, "generalize", [True, False])
    with pytest.raises(InvalidInput, match="x = generalize:1.5 keeps characters of text"):
        column(home, "generalize:1.5", ["SW1A 1AA"])


def test_keep_and_unruled_columns_are_left_as_they_are(home: Home) -> None:
    assert column(home, "keep", EMAILS) == EMAILS
    table = pa.table({"input.email": EMAILS, "output.label": [1, 0, 1, 1]})
    assert protect(home, {"card": "drop"}, table) == table


def test_a_column_flagged_at_registration_without_a_rule_is_hashed(home: Home) -> None:
    protection = LogProtection(settings_for(home, {"card": "mask"}), home)
    table = pa.table({"input.email": EMAILS, "input.card": CARDS})

    flagged = protection(version_of({"email": "email", "card": "card"}), table)
    unflagged = protection(version_of(number=2), table)

    assert flagged.column("input.card").to_pylist() == ["****1111", "****0004", "****", None]
    pseudonyms = flagged.column("input.email").to_pylist()
    assert pseudonyms[0] == pseudonym(home, "alice@example.com")
    assert "alice@example.com" not in pseudonyms
    assert unflagged.column("input.email").to_pylist() == EMAILS
    keep = LogProtection(settings_for(home, {"email": "keep"}), home)
    assert keep(version_of({"email": "email"}), table).column("input.email") == table["input.email"]


def test_each_value_of_a_list_column_is_treated(home: Home) -> None:
    values = pa.array([["alice@example.com", "bob@example.org"], None, []])
    table = pa.table({"input.x": values})
    protected = protect(home, {"x": "mask:3"}, table).column("input.x").to_pylist()
    assert protected == [["****com", "****org"], None, []]


def test_the_log_writes_protected_rows_only(home: Home) -> None:
    protection = LogProtection(settings_for(home, {"email": "hash", "card": "mask"}), home)
    log = PredictionLog(home.root / "predictions", protect=protection)
    inputs = {
        "email": np.array(EMAILS[:2], dtype=object),
        "card": np.array(CARDS[:2], dtype=object),
        "amount": np.array([12.5, 99.0]),
    }
    log.append(version_of(), "req-1", "key:test", 0.001, inputs, {"label": np.array([0, 1])})
    assert log.flush() == 2

    (segment,) = (home.root / "predictions" / "fraud").glob("*/*.parquet")
    stored = segment.read_bytes()
    assert b"alice@example.com" not in stored
    assert b"4111" not in stored
    table = read_predictions(home, "fraud")
    assert table.column("input.card").to_pylist() == ["****1111", "****0004"]
    assert table.column("input.email").to_pylist() == [pseudonym(home, text) for text in EMAILS[:2]]
    assert table.column("input.amount").to_pylist() == [12.5, 99.0]


def test_rows_that_cannot_be_protected_are_shed(home: Home) -> None:
    protection = LogProtection(settings_for(home, {"flag": "generalize"}), home)
    signature = Signature(
        inputs=(TensorSpec("flag", "BOOL", (-1,)),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
        tabular=True,
    )
    version = dataclasses.replace(version_of(), signature=signature)
    log = PredictionLog(home.root / "predictions", protect=protection)
    log.append(version, "r", "p", 0.001, {"flag": np.array([True])}, {"label": np.array([1])})

    assert log.flush() == 0
    assert log.shed_rows == 1
    assert not list((home.root / "predictions").rglob("*.parquet"))
    asyncio.run(log.close())


def test_a_log_spanning_a_new_hash_rule_on_a_number_reads_as_text(home: Home) -> None:
    """Rows logged before a rule covered a number keep it; those after hold its pseudonym: the
    readers (and compaction) see the column as text."""
    inputs = {
        "email": np.array(["a@example.com"], dtype=object),
        "card": np.array(["x"], dtype=object),
        "amount": np.array([12.5]),
    }
    outputs = {"label": np.array([1])}
    before = PredictionLog(home.root / "predictions")
    before.append(version_of(), "r1", "p", 0.001, inputs, outputs)
    before.flush()
    protection = LogProtection(settings_for(home, {"amount": "hash"}), home)
    after = PredictionLog(home.root / "predictions", protect=protection)
    after.append(version_of(), "r2", "p", 0.001, inputs, outputs)
    after.flush()

    amounts = read_predictions(home, "fraud")["input.amount"].to_pylist()
    assert amounts == ["12.5", pseudonym(home, "12.5")]
