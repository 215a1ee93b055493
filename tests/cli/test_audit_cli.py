"""``dockyard audit verify|log|export`` on a real home: what they print, their filters and exit
codes, and a registry database tampered with by hand caught and named."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clirun import run_cli
from dockyard.errors import AuditTampered
from dockyard.registry.audit import AuditEntry, append, entry_hash
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace
from servers import dockyard_command

ME = local_user().actor


@pytest.fixture
def audited(workspace: Workspace, home: Path) -> Path:
    """A home whose trail holds three key changes by the local user and an alias move by a key."""
    record, _ = workspace.keys.create(local_user(), "ci", Role.DEPLOYER)
    workspace.keys.rotate(local_user(), record.key_id)
    workspace.keys.create(local_user(), "reader", Role.AUDITOR, ["fraud"])
    with workspace.store.engine.begin() as connection:
        append(connection, AuditEntry("key:ci", "alias.move", "fraud@staging", "fraud"))
    return home


def entries(
    capsys: pytest.CaptureFixture[str], home: Path, *filters: str
) -> list[dict[str, object]]:
    code, out, err = run_cli(capsys, "audit", "log", "--json", *filters, "--home", str(home))
    assert code == 0, err
    listed: list[dict[str, object]] = json.loads(out)
    return listed


def test_verify_an_intact_trail(capsys: pytest.CaptureFixture[str], audited: Path) -> None:
    code, out, err = run_cli(capsys, "audit", "verify", "--home", str(audited))

    assert (code, err) == (0, "")
    assert out == "audit trail intact: 4 entries\n"


def test_log_lists_entries_oldest_first_with_filters(
    capsys: pytest.CaptureFixture[str], audited: Path
) -> None:
    listed = entries(capsys, audited)
    assert [e["action"] for e in listed] == ["key.create", "key.rotate", "key.create", "alias.move"]
    assert [e["seq"] for e in listed] == [1, 2, 3, 4]
    assert listed[0]["actor"] == ME
    assert listed[0]["details"]["role"] == "deployer"  # type: ignore[index]
    assert "hash" not in json.dumps(listed[0]["details"])  # never the key's hash

    assert [e["seq"] for e in entries(capsys, audited, "--model", "fraud")] == [4]
    assert [e["seq"] for e in entries(capsys, audited, "--actor", "key:ci")] == [4]
    assert [e["seq"] for e in entries(capsys, audited, "--limit", "2")] == [3, 4]
    assert len(entries(capsys, audited, "--since", "1h")) == 4
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert entries(capsys, audited, "--since", tomorrow) == []


def test_log_prints_a_table(capsys: pytest.CaptureFixture[str], audited: Path) -> None:
    code, out, _ = run_cli(capsys, "audit", "log", "--home", str(audited))

    assert code == 0
    assert out.index("key.rotate") < out.index("alias.move")
    assert "key:ci" in out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--since", "yesterday"], "must be a duration such as 1h"),
        (["--limit", "0"], "--limit must be between 1"),
    ],
    ids=["since", "limit"],
)
def test_log_refuses_bad_filters(
    capsys: pytest.CaptureFixture[str], audited: Path, option: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "audit", "log", *option, "--home", str(audited))

    assert code == 2
    assert message in err


def test_export_jsonl_to_a_file_and_to_stdout(
    capsys: pytest.CaptureFixture[str], audited: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "audit.jsonl"
    code, _, err = run_cli(
        capsys,
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        str(out_file),
        "--home",
        str(audited),
    )
    assert code == 0
    assert f"exported 4 audit entries to {out_file}" in err
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    last = lines[-1]
    fields = (last[key] for key in ("actor", "action", "target", "model", "details"))
    assert last["hash"] == entry_hash(
        last["prev_hash"], last["seq"], datetime.fromisoformat(last["at"]), *fields
    )

    piped = subprocess.run(
        [*dockyard_command(), "audit", "export", "--home", str(audited)],
        capture_output=True,
        check=True,
    )
    assert piped.stdout.decode() == out_file.read_text()


def test_export_refuses_another_format(capsys: pytest.CaptureFixture[str], audited: Path) -> None:
    code, _, err = run_cli(capsys, "audit", "export", "--format", "csv", "--home", str(audited))

    assert code == 2
    assert "--format must be jsonl" in err


def test_a_tampered_trail_fails_verify_naming_each_entry(
    capsys: pytest.CaptureFixture[str], audited: Path
) -> None:
    with closing(sqlite3.connect(audited / "dockyard.db")) as connection, connection:
        connection.execute('UPDATE audit_log SET details = \'{"role": "admin"}\' WHERE seq = 1')
        connection.execute("DELETE FROM audit_log WHERE seq = 3")

    code, out, err = run_cli(capsys, "audit", "verify", "--home", str(audited))

    assert code == AuditTampered.exit_code == 12
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("entry 1: edited: ")
    assert lines[1].startswith("entry 3: deleted: entry 3 is missing")
    assert lines[2] == (
        "error: the audit trail was tampered with: 2 problem(s) found; restore the registry "
        "database from a backup, or keep this output as the record of what was changed"
    )


def test_verify_still_runs_when_the_head_row_is_gone(
    capsys: pytest.CaptureFixture[str], audited: Path
) -> None:
    with closing(sqlite3.connect(audited / "dockyard.db")) as connection, connection:
        connection.execute("DELETE FROM audit_head")

    code, _, err = run_cli(capsys, "audit", "verify", "--home", str(audited))

    assert code == 12
    assert "entry 4: deleted: the audit trail's head row is missing" in err
