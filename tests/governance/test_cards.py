"""Model cards: the check of their fields (each mistake named), reading them from TOML, JSON and
YAML files, updating them field by field, storing them on a version with their ``card.set`` audit
entry in the same transaction (SQLite and PostgreSQL), and rendering them with the version's
lineage to Markdown and HTML (the user's text escaped)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dockyard.config import load_settings
from dockyard.errors import Forbidden, InvalidInput, NotFound
from dockyard.governance.cards import (
    CARD_FIELDS,
    MAX_OWNERS,
    MAX_TEXT_CHARS,
    card_document,
    changed_fields,
    check_card,
    field_updates,
    merge_card,
    missing_fields,
    read_card_file,
)
from dockyard.governance.rendering import render_card
from dockyard.registry.audit import AuditEntry, read_entries
from dockyard.registry.records import ArtifactRef, Lineage
from dockyard.registry.store import RegistryStore
from dockyard.registry.tables import audit_log
from dockyard.security.principals import Principal, Role, local_user
from dockyard.services import cards
from dockyard.services.workspace import Workspace
from registry.conftest import (  # noqa: F401 (the registry tests' database fixtures)
    DIGEST,
    LINEAGE,
    SIGNATURE,
    database_url,
    postgres_admin,
)

CARD = {
    "intended_use": "Rank card payments for manual fraud review.",
    "limitations": "Trained on EU traffic of 2025 only.",
    "owners": ["risk-team@example.com", "Ada Lovelace"],
}
TOML_CARD = """\
intended_use = "Rank card payments for manual fraud review."
limitations = \"\"\"Trained on EU traffic of 2025 only.
Not for merchants outside the EU.\"\"\"
owners = ["risk-team@example.com"]
"""
YAML_CARD = """\
intended_use: Rank card payments for manual fraud review.
owners:
  - risk-team@example.com
"""


def test_a_card_keeps_its_fields_in_order_and_leaves_blank_ones_out() -> None:
    checked = check_card({"owners": ["a"], "evaluation": "  ", "intended_use": "x"})

    assert list(checked) == ["intended_use", "owners"]
    assert missing_fields(checked, CARD_FIELDS) == [
        "out_of_scope_use",
        "training_data",
        "evaluation",
        "limitations",
        "ethical_considerations",
    ]


@pytest.mark.parametrize(
    ("card", "named"),
    [
        ({"intended_uses": "x"}, "'intended_uses'"),
        ({"limitations": 3}, "'limitations' must be text"),
        ({"limitations": ["a"]}, "'limitations' must be text"),
        ({"owners": "alice"}, "'owners' must be a list of names"),
        ({"owners": ["alice", 7]}, "'owners' must be a list of names"),
        ({"owners": ["alice", " "]}, "each owner must be 1 to 256"),
        ({"owners": ["x" * 257]}, "each owner must be 1 to 256"),
        ({"owners": [f"o{n}" for n in range(MAX_OWNERS + 1)]}, f"the limit is {MAX_OWNERS}"),
        ({"evaluation": "x" * (MAX_TEXT_CHARS + 1)}, f"the limit is {MAX_TEXT_CHARS}"),
        ({"evaluation": "a\x00b"}, "'evaluation' holds a NUL"),
        (["intended_use"], "must be an object"),
    ],
    ids=[
        "unknown-field",
        "number",
        "list-as-text",
        "owners-as-text",
        "owner-not-text",
        "blank-owner",
        "long-owner",
        "too-many-owners",
        "long-text",
        "nul",
        "not-an-object",
    ],
)
def test_a_malformed_card_is_refused_naming_the_field(card: Any, named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        check_card(card)


def test_fields_are_merged_one_by_one_and_a_blank_one_is_removed() -> None:
    updates = field_updates({"owners": "a@example.com, b ,", "limitations": ""})

    assert updates == {"owners": ["a@example.com", "b"], "limitations": ""}
    merged = merge_card(CARD, {**updates, "evaluation": "AUC 0.91"})
    assert merged == {
        "intended_use": CARD["intended_use"],
        "evaluation": "AUC 0.91",
        "owners": ["a@example.com", "b"],
    }
    assert changed_fields(CARD, merged) == ["evaluation", "limitations", "owners"]
    with pytest.raises(InvalidInput, match="unknown model card field 'owner'"):
        merge_card(CARD, {"owner": "x"})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "card.toml",
            TOML_CARD,
            {
                "intended_use": CARD["intended_use"],
                "limitations": "Trained on EU traffic of 2025 only.\n"
                "Not for merchants outside the EU.",
                "owners": ["risk-team@example.com"],
            },
        ),
        ("card.json", json.dumps(CARD), CARD),
        (
            "card.yaml",
            YAML_CARD,
            {"intended_use": CARD["intended_use"], "owners": ["risk-team@example.com"]},
        ),
    ],
    ids=["toml", "json", "yaml"],
)
def test_a_card_is_read_from_a_file(
    tmp_path: Path, name: str, text: str, expected: dict[str, Any]
) -> None:
    path = tmp_path / name
    path.write_text(text)

    assert read_card_file(path) == expected


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("card.txt", "x", "name it with one of .toml"),
        ("card.toml", "intended_use = ", "is not valid TOML"),
        ("card.json", "{", "is not valid JSON"),
        ("card.yml", "a: [", "is not valid YAML"),
        ("card.json", "[1, 2]", "must hold the card's fields at its top level"),
        ("card.toml", "owners = 'alice'", "'owners' must be a list of names"),
        ("missing.toml", None, "cannot read model card file"),
    ],
    ids=["suffix", "toml", "json", "yaml", "not-a-table", "bad-field", "missing"],
)
def test_a_bad_card_file_is_refused_naming_it(
    tmp_path: Path, name: str, text: str | None, named: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)

    with pytest.raises(InvalidInput, match=named) as raised:
        read_card_file(path)
    assert str(path) in str(raised.value)


def test_the_store_sets_a_card_with_its_audit_entry_in_one_transaction(
    registered: Workspace,
) -> None:
    store = registered.store
    entry = AuditEntry("alice", "card.set", "fraud:1", "fraud", {"fields": ["owners"]})

    stored = store.set_card("fraud", 1, CARD, audit=entry)

    assert stored.card == CARD
    assert store.get_version("fraud", 1).card == CARD
    [logged] = read_entries(store.engine, model="fraud", limit=1)
    assert (logged.action, logged.target, logged.details) == ("card.set", "fraud:1", entry.details)
    assert store.set_card("fraud", 1, None).card is None


def test_a_card_on_a_missing_version_changes_nothing_and_audits_nothing(
    registered: Workspace,
) -> None:
    store = registered.store
    before = _entries(store)

    with pytest.raises(NotFound, match="has no version 9"):
        store.set_card("fraud", 9, CARD, audit=AuditEntry("alice", "card.set", "fraud:9"))
    with pytest.raises(NotFound, match="'ghost' is not registered"):
        store.set_card("ghost", 1, CARD, audit=AuditEntry("alice", "card.set", "ghost:1"))
    assert _entries(store) == before


def _entries(store: RegistryStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_log)).scalar_one())


@pytest.fixture
def registered(home: Path, database_url: str) -> Iterator[Workspace]:  # noqa: F811
    """A workspace on each backend with ``fraud:1`` (sample values, a known lineage; no artifact
    is loaded)."""
    workspace = Workspace.open(load_settings({"home": home, "database_url": database_url}, env={}))
    lineage = {**LINEAGE.to_dict(), "git_commit": "4f2a9c1e", "parent": "fraud:0"}
    workspace.store.create_version(
        model="fraud",
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=SIGNATURE,
        lineage=Lineage.from_dict(lineage),
        created_by="alice",
    )
    yield workspace
    workspace.store.close()


def test_setting_a_card_audits_the_fields_it_changed_not_their_text(
    registered: Workspace,
) -> None:
    admin = local_user()

    cards.set_card(registered, admin, "fraud", 1, CARD)
    updated = cards.set_card(
        registered, admin, "fraud", 1, {"evaluation": "AUC 0.91", "owners": ""}, merge=True
    )

    assert updated.card == {
        "intended_use": CARD["intended_use"],
        "evaluation": "AUC 0.91",
        "limitations": CARD["limitations"],
    }
    first, second = read_entries(registered.store.engine, model="fraud")[-2:]
    assert (first.actor, first.action, first.target) == (admin.actor, "card.set", "fraud:1")
    assert first.details == {"fields": ["intended_use", "limitations", "owners"]}
    assert second.details == {"fields": ["evaluation", "owners"]}
    stored_text = json.dumps([first.details, second.details])
    assert "EU traffic" not in stored_text
    assert "AUC" not in stored_text


@pytest.mark.parametrize(
    "principal",
    [
        Principal("reader", Role.PREDICTOR),
        Principal("auditor", Role.AUDITOR),
        Principal("other-team", Role.DEPLOYER, frozenset({"churn"})),
    ],
    ids=["predictor", "auditor", "deployer-of-another-model"],
)
def test_only_who_may_update_the_model_sets_its_card(
    registered: Workspace, principal: Principal
) -> None:
    before = _entries(registered.store)

    with pytest.raises(Forbidden):
        cards.set_card(registered, principal, "fraud", 1, CARD)
    assert registered.store.get_version("fraud", 1).card is None
    assert _entries(registered.store) == before


def test_a_deployer_sets_the_card_and_an_auditor_reads_it(registered: Workspace) -> None:
    cards.set_card(
        registered, Principal("ci", Role.DEPLOYER, frozenset({"fraud"})), "fraud", 1, CARD
    )

    assert cards.read_card(registered, Principal("audit", Role.AUDITOR), "fraud:1").card == CARD
    with pytest.raises(Forbidden):
        cards.read_card(registered, Principal("p", Role.PREDICTOR, frozenset({"churn"})), "fraud:1")


def test_the_card_is_shown_with_the_lineage_of_its_version(registered: Workspace) -> None:
    version = cards.set_card(registered, local_user(), "fraud", 1, CARD)

    document = card_document(version)
    markdown = render_card(document, "markdown")

    assert markdown.startswith("# Model card: fraud:1\n")
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert titles == [
        "## Intended use",
        "## Out-of-scope use",
        "## Training data",
        "## Evaluation",
        "## Limitations",
        "## Ethical considerations",
        "## Owners",
        "## Lineage",
    ]
    assert "## Training data\n\n_Not given._" in markdown
    assert "- risk-team@example.com\n- Ada Lovelace" in markdown
    for fact in (
        f"| Data fingerprint (SHA-256) | {'cd' * 32} (10 rows, 2 columns) |",
        "| Code commit | 4f2a9c1e |",
        "| Parent version | fraud:0 |",
        "| Environment | Python 3.11.7, numpy 2.0.0 |",
        "| Registered by | alice |",
        f"| Artifact (SHA-256) | {DIGEST} |",
    ):
        assert fact in markdown
    html = render_card(document, "html")
    for value in (CARD["intended_use"], "4f2a9c1e", "fraud:0", "alice", "Ada Lovelace"):
        assert value in html
    assert json.loads(render_card(document, "json")) == document
    assert document["missing"] == [
        "out_of_scope_use",
        "training_data",
        "evaluation",
        "ethical_considerations",
    ]


def test_the_users_text_never_becomes_markup(registered: Workspace) -> None:
    hostile = '<script>alert("x")</script> | <img src=x onerror=alert(1)>'
    version = cards.set_card(
        registered, local_user(), "fraud", 1, {"intended_use": hostile, "owners": [hostile]}
    )
    document = card_document(version)

    html = render_card(document, "html")
    markdown = render_card(document, "markdown")

    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<script" not in markdown
    assert "<img" not in markdown
    assert '&lt;script>alert("x")&lt;/script>' in markdown
    # The page loads nothing: no script, no asset, a policy that forbids both.
    assert "default-src 'none'" in html
    assert " src=" not in html.replace("&lt;img src=", "")
    assert " href=" not in html


def test_an_unknown_format_is_refused(registered: Workspace) -> None:
    version = registered.store.get_version("fraud", 1)

    with pytest.raises(InvalidInput, match="markdown, html, json"):
        render_card(card_document(version), "pdf")
