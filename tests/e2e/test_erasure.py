"""The right to erasure against a real server that logs every request: several people's requests
(an ``email`` input) to two models, labels for them, then ``dockyard data erase --subject`` (the
real CLI) while the server keeps answering another person, and ``POST /api/data/erase`` (an
admin key; a deployer key gets 403). Afterwards no logged row, label or drift example of the
erased person remains in any file or table (as written, or as its keyed pseudonym), everyone
else's rows and labels do, and the audit trail records each erasure without the value."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sqlalchemy import insert, select

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.governance.pseudonyms import open_pseudonymizer
from dockyard.home import Home
from dockyard.monitoring.predlog import read_predictions, read_segment
from dockyard.registry.tables import audit_log, drift_reports
from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server
from waiting import wait_for

pytestmark = pytest.mark.e2e

ANN, BOB, CY = "ann@example.com", "bob@example.com", "cy@example.com"
MODELS = ("fraud", "churn")
Answered = tuple[str, str, int, str]
"""model, request id, row, email."""


def infer(http: httpx.Client, server: Server, model: str, emails: list[str]) -> list[Answered]:
    rows = len(emails)
    body = {
        "inputs": [
            {"name": "email", "shape": [rows], "datatype": "BYTES", "data": emails},
            {"name": "amount", "shape": [rows], "datatype": "FP64", "data": [1.5] * rows},
        ]
    }
    response = http.post(f"{server.url}/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    return [(model, request_id, row, email) for row, email in enumerate(emails)]


def count(answered: list[Answered], model: str, person: str | None = None) -> int:
    """Rows answered by ``model`` (of ``person`` only, if given)."""
    return sum(m == model and person in (None, email) for m, _, _, email in answered)


def logged(home: Path, model: str) -> set[tuple[str, int, str]]:
    table = read_predictions(Home(home), model, columns=["request_id", "row", "input.email"])
    return set(zip(*(table[name].to_pylist() for name in table.column_names), strict=True))


def every_row(folder: Path) -> pa.Table:
    """Every row of every segment file under ``folder``, read one file at a time: what a
    person would find on disk, covered and merged segments alike."""
    tables = [read_segment(path, None, None, None) for path in sorted(folder.rglob("*.parquet"))]
    return pa.concat_tables(tables, promote_options="permissive")


def test_erasing_a_person_leaves_no_record_of_them_and_everyone_else_s(
    home: Path,
    start_server: Callable[..., Server],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    people = [ANN, BOB, CY]
    frame = pd.DataFrame(
        {"email": [people[i % 3] for i in range(90)], "amount": rng.normal(size=90)}
    )
    workspace = open_unprotected(home)
    for model in MODELS:
        pipeline = make_pipeline(
            make_column_transformer(("drop", ["email"]), remainder="passthrough"),
            LogisticRegression(),
        ).fit(frame, (frame["amount"] > 0).astype(int))
        register(workspace, pipeline, Registration(model, reference_data=frame))
    _, deployer = workspace.keys.create(local_user(), "deployer", Role.DEPLOYER)
    workspace.store.engine.dispose()
    monkeypatch.setenv("DOCKYARD_PREDICTION_LOG", "true")
    monkeypatch.setenv("DOCKYARD_LOG_FLUSH_S", "0.2")
    server = start_server(home, "fraud:1", "churn:1", "--workers", "2", auth=True)
    admin = {"Authorization": f"Bearer {server.admin_key}"}

    # Requests of one to three people's rows, to both models; a label for every row.
    choose = random.Random(3)
    answered: list[Answered] = []
    with httpx.Client(headers=admin, timeout=30) as http:
        for index in range(40):
            emails = [choose.choice(people) for _ in range(choose.randint(1, 3))]
            answered += infer(http, server, MODELS[index % 2], emails)
        for model in MODELS:
            wait_for(lambda m=model: len(logged(home, m)) == count(answered, m))
            labels = [
                {"request_id": rid, "row": row, "label": row % 2}
                for m, rid, row, _ in answered
                if m == model
            ]
            sent = http.post(f"{server.url}/v2/models/{model}/feedback", json={"labels": labels})
            assert sent.status_code == 200, sent.text
    labelled = {(rid, row) for _, rid, row, _ in answered}
    # As the log may hold an email: itself, or its keyed pseudonym (the ``hash`` rule).
    pseudonym = open_pseudonymizer(load_settings({"home": home}, env={}), Home(home))
    forms = {person: {person, pseudonym(person)} for person in people}
    with workspace.store.engine.begin() as connection:  # a drift report quoting Bob
        connection.execute(
            insert(drift_reports).values(
                model="fraud", version=1, computed_at=datetime.now(UTC), window="24h",
                rows=40, feature="email", method="psi+chi2", score=0.3, p_value=0.01,
                drifted=True, details={"unseen_examples": [BOB, ANN]},
            )
        )  # fmt: skip
    workspace.store.engine.dispose()

    # Ann keeps using the service throughout; Bob's last request is still queued in its worker
    # when the erasure starts.
    stop = threading.Event()
    during: list[Answered] = []

    def ann_keeps_asking() -> None:
        with httpx.Client(headers=admin, timeout=30) as http:
            while not stop.is_set():
                during.extend(infer(http, server, MODELS[len(during) % 2], [ANN]))

    sender = threading.Thread(target=ann_keeps_asking)
    sender.start()
    try:
        with httpx.Client(headers=admin, timeout=30) as http:
            answered += infer(http, server, "fraud", [ANN, BOB])
        code, out, err = run_cli(
            capsys, "data", "erase", "--subject", f"email={BOB}", "--yes", "--home", str(home)
        )
    finally:
        stop.set()
        sender.join()
    assert code == 0, err
    assert BOB not in out
    answered += during
    for model in MODELS:
        wait_for(
            lambda m=model: len(logged(home, m)) == count(answered, m) - count(answered, m, BOB)
        )

    # Nothing of Bob anywhere: log rows, labels, drift examples, as written or pseudonymized.
    everything = every_row(home / "predictions")
    assert not forms[BOB] & set(everything["input.email"].to_pylist())
    bob_keys = {(rid, row) for _, rid, row, email in answered if email == BOB}
    labels = every_row(home / "labels")
    label_keys = set(zip(labels["request_id"].to_pylist(), labels["row"].to_pylist(), strict=True))
    assert not bob_keys & label_keys
    assert label_keys == labelled - bob_keys  # everyone else's labels stay
    for model in MODELS:  # everyone else's rows stay, each once
        expected = {(rid, row) for m, rid, row, email in answered if m == model and email != BOB}
        assert {(rid, row) for rid, row, _ in logged(home, model)} == expected
    with workspace.store.engine.connect() as connection:
        (details,) = connection.execute(
            select(drift_reports.c.details).where(drift_reports.c.feature == "email")
        ).scalars()
        (entry,) = connection.execute(
            select(audit_log).where(audit_log.c.action == "data.erase")
        ).all()
    assert details["unseen_examples"] == [ANN]
    assert entry.details["feature"] == "email"
    assert entry.details["rows"] == {model: count(answered, model, BOB) for model in MODELS}
    assert sum(entry.details["labels"].values()) == len(bob_keys & labelled)
    assert entry.details["drift_reports"] == 1
    assert entry.actor == local_user().actor
    stored = json.dumps([*entry._mapping.values()], default=str)
    assert not any(form in stored for form in forms[BOB])
    assert BOB not in server.output()

    # Over HTTP: a deployer may not; an admin erases Cy from one model only.
    body = {"feature": "email", "value": CY, "model": "fraud"}
    url = f"{server.url}/api/data/erase"
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {deployer}"})
    assert refused.status_code == 403, refused.text
    assert any(email in forms[CY] for _, _, email in logged(home, "fraud"))
    typo = httpx.post(url, json={**body, "feature": "e-mail"}, headers=admin)
    assert typo.status_code == 400
    assert "'e-mail'" in typo.json()["error"]
    done = httpx.post(url, json=body, headers=admin, timeout=30)
    assert done.status_code == 200, done.text
    assert done.json()["rows"] == {"fraud": count(answered, "fraud", CY)}
    assert not any(email in forms[CY] for _, _, email in logged(home, "fraud"))
    left = sum(email in forms[CY] for _, _, email in logged(home, "churn"))
    assert left == count(answered, "churn", CY)
    with workspace.store.engine.connect() as connection:
        entries = connection.execute(
            select(audit_log).where(audit_log.c.action == "data.erase").order_by(audit_log.c.seq)
        ).all()
    assert len(entries) == 2
    assert entries[1].actor.startswith("key:")
    assert entries[1].model == "fraud"
    stored = json.dumps([*entries[1]._mapping.values()], default=str)
    assert not any(form in stored for form in forms[CY])
