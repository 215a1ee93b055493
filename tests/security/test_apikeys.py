"""API keys: format and entropy, only a keyed hash stored, the in-memory ring's verdicts, and the
key store's create / revoke / rotate with their permission checks."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from dockyard.security.apikeys import KeyHasher, KeyRing, key_id_of, new_key
from dockyard.security.keystore import parse_duration, parse_rate
from dockyard.security.principals import Principal, Role, local_user
from dockyard.services.workspace import Workspace


def test_a_key_carries_256_random_bits_after_its_public_id() -> None:
    key_id, key = new_key()
    assert key.startswith(f"dk_{key_id}_")
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 bytes in URL-safe base64
    assert key_id_of(key) == key_id
    assert len({new_key()[1] for _ in range(100)}) == 100
    for text in ("dk_", "dk_short_x", "Bearer dk_x", f"dk_{key_id}_", "sk_" + key[3:]):
        assert key_id_of(text) is None


def test_only_a_keyed_hash_of_the_key_is_stored(workspace: Workspace) -> None:
    record, key = workspace.keys.create(local_user(), "ci-bot", Role.PREDICTOR, ["fraud"])
    database = workspace.home.database.read_bytes()
    assert key.encode() not in database
    assert key.split("_", 2)[2].encode() not in database
    with closing(sqlite3.connect(workspace.home.database)) as connection, connection:
        (stored,) = connection.execute("SELECT hash FROM api_keys").fetchone()
    assert stored == record.hash == workspace.hasher.digest(key)
    # Keyed: the same key under another hash key hashes differently.
    assert KeyHasher(b"another deployment").digest(key) != stored


def test_the_hash_key_file_is_private_and_stable(workspace: Workspace, home: Path) -> None:
    path = home / "secrets" / "api-key-hash-key"
    digest = workspace.hasher.digest("dk_000000000000_x")
    assert path.stat().st_mode & 0o777 == 0o600
    assert KeyHasher.open(home / "secrets", "").digest("dk_000000000000_x") == digest


def test_the_ring_names_the_caller_and_refuses_everything_else(workspace: Workspace) -> None:
    record, key = workspace.keys.create(local_user(), "ci-bot", Role.PREDICTOR, ["fraud"])
    ring = KeyRing(workspace.hasher)
    ring.load(workspace.keys.all())

    principal = ring.authenticate(key)
    assert principal == Principal(
        "ci-bot", Role.PREDICTOR, frozenset({"fraud"}), "key", record.key_id
    )
    assert principal.actor == "key:ci-bot"
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x", "dk_nope", "", "x" * 80):
        with pytest.raises(Unauthenticated, match="invalid API key"):
            ring.authenticate(wrong)


def test_revoked_and_expired_keys_are_refused(workspace: Workspace) -> None:
    admin = local_user()
    revoked, revoked_key = workspace.keys.create(admin, "old", Role.ADMIN)
    workspace.keys.revoke(admin, revoked.key_id)
    expired, expired_key = workspace.keys.create(
        admin, "short", Role.AUDITOR, expires_in=timedelta(0)
    )
    ring = KeyRing(workspace.hasher)
    ring.load(workspace.keys.all())

    with pytest.raises(Unauthenticated, match="revoked"):
        ring.authenticate(revoked_key)
    with pytest.raises(Unauthenticated, match="expired"):
        ring.authenticate(expired_key)
    states = {record.name: record.state(datetime.now(UTC)) for record in workspace.keys.all()}
    assert states == {"old": "revoked", "short": "expired"}


def test_rotation_replaces_the_key_and_ends_the_old_one_after_the_grace(
    workspace: Workspace,
) -> None:
    admin = local_user()
    old, old_key = workspace.keys.create(
        admin, "svc", Role.PREDICTOR, ["fraud"], timedelta(days=90), "50/s"
    )
    new, new_key_text = workspace.keys.rotate(admin, "svc", grace=timedelta(hours=1))
    assert new.key_id != old.key_id
    assert new_key_text != old_key
    assert (new.name, new.role, new.models, new.rate) == ("svc", Role.PREDICTOR, old.models, "50/s")
    assert new.expires_at is not None
    assert new.expires_at - new.created_at == timedelta(days=90)
    ended = workspace.keys.find(old.key_id).expires_at
    assert ended is not None
    assert ended <= datetime.now(UTC) + timedelta(hours=1)
    assert ended > datetime.now(UTC) + timedelta(minutes=59)

    # With no grace the old key stops at once. Two keys named svc are active now (the first
    # one is in its grace hour): a name no longer says which, an id does.
    workspace.keys.rotate(admin, new.key_id)
    assert workspace.keys.find(new.key_id).state(datetime.now(UTC)) == "expired"
    with pytest.raises(InvalidInput, match="2 active keys are named 'svc': use an id"):
        workspace.keys.revoke(admin, "svc")


def test_only_admins_manage_keys(workspace: Workspace) -> None:
    for role in (Role.PREDICTOR, Role.DEPLOYER, Role.APPROVER, Role.AUDITOR):
        caller = Principal("someone", role)
        with pytest.raises(Forbidden, match="may not manage keys"):
            workspace.keys.create(caller, "x", Role.ADMIN)
        with pytest.raises(Forbidden):
            workspace.keys.revoke(caller, "x")


def test_bad_requests_name_the_problem(workspace: Workspace) -> None:
    admin = local_user()
    with pytest.raises(InvalidInput, match="invalid key name"):
        workspace.keys.create(admin, "has space", Role.ADMIN)
    with pytest.raises(InvalidInput, match="rate"):
        workspace.keys.create(admin, "x", Role.ADMIN, rate="fast")
    with pytest.raises(NotFound, match="no API key"):
        workspace.keys.revoke(admin, "missing")
    for text in ("90", "d", "-1d", "1y"):
        with pytest.raises(InvalidInput, match="duration"):
            parse_duration(text)
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_rate("6000/min") == 100.0
    assert parse_rate("5/s") == 5.0
    with pytest.raises(InvalidInput):
        parse_rate("0/s")


def test_a_remembered_key_is_checked_again_after_each_reload(workspace: Workspace) -> None:
    record, key = workspace.keys.create(local_user(), "svc", Role.PREDICTOR)
    ring = KeyRing(workspace.hasher)
    ring.load(workspace.keys.all())
    assert ring.authenticate(key).key_id == record.key_id
    assert ring.authenticate(key).key_id == record.key_id  # remembered: no hash this time

    workspace.keys.revoke(local_user(), record.key_id)
    ring.load(workspace.keys.all())
    with pytest.raises(Unauthenticated, match="revoked"):
        ring.authenticate(key)
    ring.load([])
    with pytest.raises(Unauthenticated, match="invalid API key"):
        ring.authenticate(key)
