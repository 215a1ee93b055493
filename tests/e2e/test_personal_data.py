"""Acceptance: personal data is protected before anything is stored. A scikit-learn pipeline
(saved with skops, registered with the CLI) takes a customer's name, email, phone, card,
postcode, birth date and referrer's email beside the amount and country it scores; the rules of
``dockyard.toml`` hash the email, mask the card, drop the phone and name and generalize the
postcode and birth date (the referrer, flagged by its values, gets no rule: hashed). Real
requests (V2 and V1, two workers, a failing one and a refused one) go to a real server with the
prediction log and the access log on, which is stopped and started again; labels come later by
``POST /v2/models/fraud/feedback``.

Then every byte Dockyard stored (every file of the home: database, log segments decoded too,
labels, metrics, secrets) and every line it printed holds none of the personal values, in any
common encoding, while the hashed email still joins each customer's predictions, across
workers and restarts, to their labels, and live accuracy is computed."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import skops.io
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.governance.privacy_detect import luhn_valid
from dockyard.governance.pseudonyms import open_pseudonymizer
from dockyard.home import Home
from dockyard.monitoring.feedback import read_labels
from dockyard.monitoring.predlog import read_predictions
from dockyard.services.workspace import Workspace
from servers import Server

pytestmark = pytest.mark.e2e

FIRST = ["Alice", "Bruno", "Chloe", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
LAST = ["Smith", "Moreau", "Okafor", "Ivanova", "Tanaka", "Larsen", "Silva", "Novak"]
POSTCODES = ["SW1A 1AA", "EC1A 1BB", "W1A 0AX", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT"]
COUNTRIES = ["FR", "DE", "UK"]
PERSONAL = ("name", "email", "phone", "card", "postcode", "birth_date", "referrer")
RULES = """
[governance.personal_data.fraud]
email = "hash"
card = "mask"
phone = "drop"
name = "drop"
postcode = "generalize"
birth_date = "generalize"
"""
UNKNOWN_COUNTRY = "mallory.unknown@example.com"
"""Sent as a country the model never saw: scikit-learn's error quotes it."""
WRONG_AMOUNT = "eve.amount@example.com"
"""Sent as the amount, a number: refused before the model."""


@dataclasses.dataclass(frozen=True)
class Customer:
    name: str
    email: str
    phone: str
    card: str
    postcode: str
    birth_date: str
    referrer: str
    country: str
    fraud: int


def card_number(index: int) -> str:
    stem = f"453914880343{index:03d}"
    digits = next(stem + d for d in "0123456789" if luhn_valid(stem + d))
    return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


def customers(count: int = 20) -> list[Customer]:
    names = [(FIRST[i % len(FIRST)], LAST[(i * 3) % len(LAST)]) for i in range(count)]
    return [
        Customer(
            name=f"{first} {last}",
            email=f"{first.lower()}.{last.lower()}{i}@mail.test",
            phone=f"+44 20 7946 {i:04d}",
            card=card_number(i),
            postcode=POSTCODES[i % len(POSTCODES)],
            birth_date=f"{1960 + i}-{1 + i % 12:02d}-{10 + i % 18:02d}",
            referrer=f"referrer{i}@friends.test",
            country=COUNTRIES[i % len(COUNTRIES)],
            fraud=int(i % 4 == 0),
        )
        for i, (first, last) in enumerate(names)
    ]


def amount(customer: Customer, rng: random.Random) -> float:
    return round(rng.uniform(400, 1000) if customer.fraud else rng.uniform(0, 600), 2)


def table_of(people: list[Customer], amounts: list[float]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        field: [getattr(p, field) for p in people] for field in PERSONAL
    }
    return {**columns, "amount": amounts, "country": [p.country for p in people]}


def encodings(value: str) -> set[bytes]:
    """``value`` as text, escaped, quoted, base64, hex, UTF-16, its digits alone and its plain
    hashes: how a personal value could be stored."""
    texts = {value, value.lower(), value.upper(), value.replace(" ", ""), json.dumps(value)[1:-1]}
    texts |= {quote(value), quote_plus(value)}
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 7:
        texts.add(digits)
    raw = value.encode()
    found = {text.encode() for text in texts} | {text.encode("utf-16-le") for text in texts}
    found |= {base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()}
    for name in ("sha256", "sha1", "md5"):
        digest = hashlib.new(name, raw).hexdigest()
        found |= {digest.encode(), digest[:32].encode()}
    return found


def stored_texts(home: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under ``home`` as its bytes, and each Parquet file (compressed pages) once more
    as the JSON of its decoded rows."""
    for path in sorted(home.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        yield path, data
        if data.startswith(b"PAR1"):
            rows = pq.read_table(path).to_pylist()
            yield path, json.dumps(rows, default=str).encode()


def v2_body(people: list[Customer], amounts: list[float]) -> dict[str, Any]:
    inputs = []
    for column, values in table_of(people, amounts).items():
        datatype = "FP64" if column == "amount" else "BYTES"
        inputs.append(
            {"name": column, "shape": [len(values)], "datatype": datatype, "data": values}
        )
    return {"inputs": inputs}


def test_no_personal_value_is_stored_and_the_hashed_email_still_joins_labels(
    home: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(7)
    people = customers()
    training = [person for person in people for _ in range(15)]
    reference = pd.DataFrame(table_of(training, [amount(p, rng) for p in training]))
    pipeline = make_pipeline(
        make_column_transformer(
            ("passthrough", ["amount"]), (OneHotEncoder(), ["country"]), remainder="drop"
        ),
        LogisticRegression(max_iter=1000),
    ).fit(reference, [p.fraud for p in training])
    model_file = tmp_path / "fraud.skops"
    skops.io.dump(pipeline, model_file)
    reference_file = tmp_path / "reference.csv"
    reference.to_csv(reference_file, index=False)
    config = tmp_path / "dockyard.toml"
    config.write_text(RULES)
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config))
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    printed: list[str] = []

    code, out, err = run_cli(
        capsys, "models", "register", str(model_file), "--name", "fraud",
        "--reference", str(reference_file), "--home", str(home),
    )  # fmt: skip
    assert code == 0, err
    printed += [out, err]
    workspace = Workspace.open(load_settings({"home": home}))
    version = workspace.store.get_version("fraud", 1)
    workspace.store.engine.dispose()
    assert version.personal_data == {
        "name": "name",
        "email": "email",
        "phone": "phone",
        "card": "card",
        "postcode": "postcode",
        "birth_date": "birth_date",
        "referrer": "email",  # by its values: the name says nothing
    }

    answered: list[tuple[str, int, int, Customer]] = []  # request id, row, predicted, customer

    def predict(http: httpx.Client, url: str, count: int) -> None:
        for _ in range(count):
            chosen = rng.sample(people, rng.randint(1, 3))
            response = http.post(
                f"{url}/v2/models/fraud/infer",
                json=v2_body(chosen, [amount(p, rng) for p in chosen]),
            )
            assert response.status_code == 200, response.text
            predicted = response.json()["outputs"][0]["data"]
            request_id = response.headers["x-request-id"]
            answered.extend((request_id, row, predicted[row], p) for row, p in enumerate(chosen))

    servers = []
    for run in range(2):
        server = start_server(home, "fraud", "--workers", "2", "--access-log")
        servers.append(server)
        with httpx.Client(timeout=30) as http:
            predict(http, server.url, 25)
            # KServe V1, one object per instance.
            person = people[run]
            instance = {k: v[0] for k, v in table_of([person], [amount(person, rng)]).items()}
            response = http.post(
                f"{server.url}/v1/models/fraud:predict", json={"instances": [instance]}
            )
            assert response.status_code == 200, response.text
            predicted = response.json()["predictions"][0]
            answered.append((response.headers["x-request-id"], 0, predicted, person))
            # The model fails on a country it never saw; its error quotes the value.
            failing = v2_body([person], [10.0])
            failing["inputs"][-1]["data"] = [UNKNOWN_COUNTRY]
            response = http.post(f"{server.url}/v2/models/fraud/infer", json=failing)
            assert response.status_code == 500
            assert UNKNOWN_COUNTRY not in response.text
            # An amount that is no number is refused before the model, without echoing it.
            refused = v2_body([person], [10.0])
            refused["inputs"][-2] = {
                "name": "amount", "shape": [1], "datatype": "BYTES", "data": [WRONG_AMOUNT]
            }  # fmt: skip
            response = http.post(f"{server.url}/v2/models/fraud/infer", json=refused)
            assert response.status_code == 400
            assert WRONG_AMOUNT not in response.text
            if run == 1:  # ground truth arrives later, for both runs' predictions
                labels = [
                    {"request_id": rid, "row": row, "label": p.fraud} for rid, row, _, p in answered
                ]
                sent = http.post(f"{server.url}/v2/models/fraud/feedback", json={"labels": labels})
                assert sent.status_code == 200, sent.text
        server.stop()  # graceful: the log is flushed
        printed.append(server.output())

    code, out, err = run_cli(
        capsys, "monitor", "evaluate", "fraud", "--window", "1h", "--json", "--home", str(home)
    )
    assert code == 0, err
    printed += [out, err]
    found = {result["metric"]: result["value"] for result in json.loads(out)}
    hits = sum(predicted == person.fraud for _, _, predicted, person in answered)
    assert found["accuracy"] == pytest.approx(hits / len(answered))
    code, out, err = run_cli(capsys, "monitor", "drift", "fraud", "--json", "--home", str(home))
    assert code == 0, err
    printed += [out, err]

    # The log: no phone or name column, the rest protected; the hashed email joins each
    # customer's predictions (both runs, both workers) to their labels.
    logged = read_predictions(Home(home), "fraud")
    assert logged.num_rows == len(answered)
    assert not {"input.phone", "input.name"} & set(logged.column_names)
    assert all(re.fullmatch(r"\*{4}\d{4}", card) for card in logged["input.card"].to_pylist())
    assert set(logged["input.postcode"].to_pylist()) <= {code.split()[0] for code in POSTCODES}
    assert all(re.fullmatch(r"\d{4}-\d{2}", day) for day in logged["input.birth_date"].to_pylist())
    assert all(re.fullmatch(r"[0-9a-f]{32}", ref) for ref in logged["input.referrer"].to_pylist())
    keys = ["request_id", "row"]
    joined = logged.select([*keys, "input.email", "input.card"]).join(
        read_labels(Home(home), "fraud"), keys=keys
    )
    assert joined.num_rows == len(answered)
    pseudonymizer = open_pseudonymizer(load_settings({"home": home}), Home(home))
    for person in people:
        pseudonym = pseudonymizer(person.email)  # as the hash rule wrote it
        rows = joined.filter(pc.equal(joined["input.email"], pseudonym))
        assert rows.num_rows == sum(p == person for _, _, _, p in answered), person.email
        assert set(rows["label"].to_pylist()) <= {float(person.fraud)}
        assert set(rows["input.card"].to_pylist()) <= {"****" + person.card[-4:]}

    # Every byte stored and every line printed: none of the personal values, in any encoding.
    values = {getattr(p, field) for p in people for field in PERSONAL if field != "postcode"}
    values |= set(POSTCODES) | {UNKNOWN_COUNTRY, WRONG_AMOUNT}
    forbidden = {form: value for value in values for form in encodings(value)}
    checked: set[str] = set()
    for path, data in stored_texts(home):
        checked.add(path.relative_to(home).parts[0])
        leaked = {value for form, value in forbidden.items() if form in data}
        assert not leaked, f"{path.relative_to(home)} holds {sorted(leaked)}"
    # How many segments the log wrote depends on the machine's speed; what was read does not.
    assert {"dockyard.db", "artifacts", "predictions", "labels", "secrets"} <= checked
    assert any(path.name.endswith(".parquet") for path in (home / "predictions").rglob("*"))
    for text in printed:
        leaked = {value for form, value in forbidden.items() if form in text.encode()}
        assert not leaked, f"printed {sorted(leaked)}:\n{text}"
    assert "ValueError: (message withheld" in servers[0].output()
    assert "POST /v2/models/fraud/infer 200" in servers[0].output()
