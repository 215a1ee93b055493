"""Every state change outside aliases, promotions, cards and erasure leaves its audit entry, by the
principal who made it, with details that name what changed but never a secret or a label:
registration, signing and its keys, API keys, the encryption key, labels and security events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import delete

from clirun import run_cli
from dockyard.errors import DockyardError
from dockyard.monitoring.feedback import labels_folder, labels_from_json, store_labels
from dockyard.registry.audit import AuditRecord, read_entries
from dockyard.registry.tables import audit_head
from dockyard.security.events import EventLog, SecurityEvent
from dockyard.security.principals import Principal, Role, local_user
from dockyard.services.register import Registration, register
from dockyard.services.signatures import create_key, sign
from dockyard.services.workspace import Workspace

ME = local_user().actor
CI = Principal("ci", Role.DEPLOYER)


def entries(workspace: Workspace, *actions: str) -> list[AuditRecord]:
    return [e for e in read_entries(workspace.store.engine) if e.action in actions]


@pytest.fixture
def reference(tabular_data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return tabular_data[0][:50]


def test_a_registration_is_audited_with_its_alias_move(
    workspace: Workspace, logistic: LogisticRegression, reference: np.ndarray
) -> None:
    version = register(
        workspace, logistic, Registration("lr", reference_data=reference, alias="staging"), CI
    )

    registered, moved = entries(workspace, "model.register", "alias.move")
    assert (registered.actor, registered.target, registered.model) == ("key:ci", "lr:1", "lr")
    assert registered.details["framework"] == "sklearn"
    assert registered.details["artifact"] == version.artifact.digest
    assert registered.details["allow_pickle"] is False
    # The registration's alias goes through the alias rules (and their audit) like any move.
    assert (moved.actor, moved.target, moved.seq) == ("key:ci", "lr@staging", registered.seq + 1)


def test_a_failed_registration_leaves_no_entry(workspace: Workspace, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "bad.py").write_text("def score(x):\n    raise RuntimeError('boom')\n")
    request = Registration("bad", reference_data=np.ones((10, 3)), entrypoint="bad:score")

    with pytest.raises(DockyardError):
        register(workspace, code, request)
    assert entries(workspace, "model.register") == []


def test_signing_keys_and_signatures_are_audited(
    workspace: Workspace, logistic: LogisticRegression, reference: np.ndarray
) -> None:
    register(workspace, logistic, Registration("lr", reference_data=reference))
    created = create_key(workspace)
    sign(workspace, "lr:1", actor=Principal("release", Role.ADMIN))

    made, signed = entries(workspace, "signing_key.create", "model.sign")
    assert (made.actor, made.target) == (ME, f"signing-key:{created.key_id}")
    assert (signed.actor, signed.target, signed.model) == ("key:release", "lr:1", "lr")
    assert signed.details == {"signing_key": created.key_id}


def test_api_keys_are_audited_without_the_key(workspace: Workspace) -> None:
    record, key = workspace.keys.create(local_user(), "bot", Role.PREDICTOR, ["lr"], rate="5/s")
    rotated, new_key = workspace.keys.rotate(local_user(), record.key_id)
    workspace.keys.revoke(local_user(), rotated.key_id)

    created, rotation, revoked = entries(workspace, "key.create", "key.rotate", "key.revoke")
    assert (created.target, created.actor) == (f"key:{record.key_id}", ME)
    assert created.details == {
        "name": "bot",
        "role": "predictor",
        "models": ["lr"],
        "expires_at": None,
        "rate": "5/s",
    }
    assert rotation.target == f"key:{rotated.key_id}"
    assert rotation.details["replaces"] == record.key_id
    assert revoked.target == f"key:{rotated.key_id}"
    everything = str([e.to_dict() for e in read_entries(workspace.store.engine)])
    for secret in (key, new_key, record.hash, rotated.hash):
        assert secret not in everything


def test_rotating_the_encryption_key_is_audited(
    capsys: pytest.CaptureFixture[str], workspace: Workspace, home: Path
) -> None:
    code, out, err = run_cli(capsys, "keys", "rotate-encryption", "--home", str(home))
    assert code == 0, err

    (rotated,) = entries(workspace, "encryption.rotate")
    assert rotated.actor == ME
    assert rotated.target == f"encryption-key:{out.split()[-1]}"
    assert rotated.details == {"reencrypted": int(out.split()[1]), "keys_from": "key file"}


def test_labels_are_audited_by_count_never_by_value(workspace: Workspace) -> None:
    body = {"labels": [{"request_id": f"r{i}", "label": "chargeback-7731"} for i in range(3)]}
    store_labels(workspace.home, workspace.store, "lr", labels_from_json(body), CI, None)

    (uploaded,) = entries(workspace, "labels.upload")
    assert (uploaded.actor, uploaded.target, uploaded.model) == ("key:ci", "lr", "lr")
    assert uploaded.details == {"labels": 3}
    assert "chargeback" not in str(uploaded.to_dict())


def test_labels_whose_entry_cannot_be_written_are_not_kept(workspace: Workspace) -> None:
    with workspace.store.engine.begin() as connection:
        connection.execute(delete(audit_head))  # every append now fails
    body = {"labels": [{"request_id": "r1", "label": 1}]}

    with pytest.raises(DockyardError, match="head row is missing"):
        store_labels(workspace.home, workspace.store, "lr", labels_from_json(body), CI, None)
    assert list(labels_folder(workspace.home, "lr").iterdir()) == []


def test_each_stored_security_event_row_is_one_entry(workspace: Workspace) -> None:
    events = EventLog(workspace.store.engine)
    for port in range(5):
        events.record(_refused(f"10.1.2.3:{port}"))
    events.record(
        _refused("10.9.9.9:1", kind="forbidden", principal="key:bot", key_id="ab12", status=403)
    )
    assert events.flush() == 2

    flood, refusal = entries(workspace, "security.event")
    assert (flood.actor, flood.target) == ("anonymous", "POST /v2/models/lr/infer")
    assert flood.details == {"kind": "auth_failed", "status": 401, "count": 5, "key_id": ""}
    assert (refusal.actor, refusal.details["key_id"]) == ("key:bot", "ab12")
    assert "10.1.2.3" not in str(flood.to_dict())  # the address stays in security_events


def _refused(client: str, **extra: object) -> SecurityEvent:
    values: dict[str, object] = {
        "kind": "auth_failed",
        "principal": "",
        "key_id": "",
        "method": "POST",
        "path": "/v2/models/lr/infer",
        "status": 401,
        "client": client,
        "detail": "invalid API key",
    }
    return SecurityEvent(**{**values, **extra})  # type: ignore[arg-type]
