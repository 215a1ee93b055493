"""Signed versions: keys at rest, the signed payload, and every way a check refuses a version."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sklearn.linear_model import LogisticRegression
from sqlalchemy import text

from dockyard.encryption import Cipher, new_key, open_cipher, reencrypt_files, write_key_file
from dockyard.errors import ArtifactCorrupt, DockyardError, Forbidden, InvalidInput, NotFound
from dockyard.registry.records import ModelVersion
from dockyard.security.principals import Principal, Role, local_user
from dockyard.security.signing import (
    SignatureStore,
    create_signing_key,
    payload,
    private_key_path,
    public_key_path,
    signing_key,
    trusted_keys,
    verify_version,
)
from dockyard.services.register import Registration, register
from dockyard.services.signatures import check_signed, create_key, load_signed, sign
from dockyard.services.workspace import Workspace


@pytest.fixture
def version(
    workspace: Workspace, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> ModelVersion:
    return register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:50]))


def _cipher(workspace: Workspace) -> Cipher:
    return open_cipher(workspace.home.secrets)


def _sql(workspace: Workspace, statement: str, **values: object) -> None:
    with workspace.store.engine.begin() as connection:
        connection.execute(text(statement), values)


def _refusal(workspace: Workspace, version: ModelVersion) -> str:
    with pytest.raises(Forbidden) as refused:
        load_signed(workspace, workspace.resolve(version.ref))
    return refused.value.message


def test_a_new_key_is_sealed_at_rest_and_named_after_its_public_key(workspace: Workspace) -> None:
    secrets_dir = workspace.home.secrets
    key_id = create_signing_key(secrets_dir, _cipher(workspace), local_user())

    sealed = private_key_path(secrets_dir, key_id)
    assert sealed.name == f"signing-{key_id}.sealed"
    data = sealed.read_bytes()
    assert b"-----BEGIN" not in data
    assert b"PRIVATE KEY" not in data
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600

    public = public_key_path(secrets_dir, key_id)
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(loaded, Ed25519PublicKey)
    raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert set(trusted_keys(secrets_dir)) == {key_id}
    # The sealed file opens only with the home's key and only under its own name.
    assert signing_key(secrets_dir, _cipher(workspace), key_id)[0] == key_id
    with pytest.raises(DockyardError, match="altered or moved|not among"):
        signing_key(secrets_dir, Cipher([new_key()]), key_id)


def test_the_payload_is_canonical_json_of_the_identity(version: ModelVersion) -> None:
    data = payload(version)
    fields = json.loads(data)
    assert data == json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert fields["type"] == "dockyard.version.v1"
    assert (fields["name"], fields["version"], fields["framework"]) == ("lr", 1, "sklearn")
    assert fields["artifact_digest"] == version.artifact.digest
    assert fields["artifact_format"] == version.artifact.format
    assert fields["signature"] == version.signature.to_dict()
    assert {"artifact_options", "allow_pickle", "trusted_types"} <= fields.keys()


def test_a_signed_version_verifies_and_loads(workspace: Workspace, version: ModelVersion) -> None:
    created = create_key(workspace)
    signed = sign(workspace, "lr:1")
    assert signed.record.key_id == created.key_id
    assert signed.record.signed_by == local_user().actor
    assert not signed.replaced

    assert check_signed(workspace, version).key_id == created.key_id
    runtime = load_signed(workspace, version)
    assert runtime is not None
    # Signing again replaces the signature by that key (Ed25519 is deterministic: same bytes).
    again = sign(workspace, "lr")
    assert again.replaced
    assert again.record.envelope == signed.record.envelope
    assert len(SignatureStore(workspace.store.engine).for_version(version)) == 1


def test_an_unsigned_version_is_refused(workspace: Workspace, version: ModelVersion) -> None:
    create_key(workspace)
    assert _refusal(workspace, version).startswith("lr:1 is not signed")


def test_changed_metadata_is_named(workspace: Workspace, version: ModelVersion) -> None:
    create_key(workspace)
    sign(workspace, "lr:1")
    _sql(workspace, "UPDATE versions SET framework = 'xgboost'")
    message = _refusal(workspace, version)
    assert message.startswith("lr:1: its metadata changed since it was signed")
    assert "(framework)" in message

    _sql(workspace, "UPDATE versions SET framework = 'sklearn'")
    check_signed(workspace, version)
    changed = version.signature.to_dict()
    changed["inputs"][0]["datatype"] = "FP32"
    _sql(workspace, "UPDATE versions SET signature = :s", s=json.dumps(changed))
    assert "(signature)" in _refusal(workspace, version)


def test_changed_loading_options_are_metadata_too(
    workspace: Workspace, version: ModelVersion
) -> None:
    create_key(workspace)
    sign(workspace, "lr:1")
    _sql(workspace, "UPDATE versions SET allow_pickle = 1, trusted_types = '[\"os.system\"]'")
    assert "(allow_pickle, trusted_types)" in _refusal(workspace, version)


def test_a_digest_pointed_at_other_bytes_is_a_metadata_change(
    workspace: Workspace, version: ModelVersion
) -> None:
    create_key(workspace)
    sign(workspace, "lr:1")
    _sql(workspace, "UPDATE versions SET artifact_digest = :d", d="0" * 64)
    assert "(artifact_digest)" in _refusal(workspace, version)


def test_changed_artifact_bytes_are_named(workspace: Workspace, version: ModelVersion) -> None:
    create_key(workspace)
    sign(workspace, "lr:1")
    digest = version.artifact.digest
    blob = workspace.home.artifacts / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    message = _refusal(workspace, version)
    assert message.startswith("lr:1: its artifact's bytes do not match the signed digest")
    assert f"signed sha256 {digest}" in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    # Nor can corrupt bytes be signed.
    with pytest.raises(ArtifactCorrupt):
        sign(workspace, "lr:1")

    blob.unlink()
    assert "the stored file is missing" in _refusal(workspace, version)


def test_an_untrusted_key_is_named(workspace: Workspace, version: ModelVersion) -> None:
    created = create_key(workspace)
    sign(workspace, "lr:1")
    created.public_key.unlink()
    message = _refusal(workspace, version)
    assert message.startswith(f"lr:1: signed by an untrusted key {created.key_id}")


def test_a_key_id_in_the_database_does_not_make_a_key_trusted(
    workspace: Workspace, version: ModelVersion
) -> None:
    """Someone who can write the database signs with their own key under a trusted key's id."""
    trusted = create_key(workspace)
    sign(workspace, "lr:1")
    trusted.public_key.rename(trusted.public_key.with_suffix(".kept"))
    private_key_path(workspace.home.secrets, trusted.key_id).unlink()
    forger = create_key(workspace)
    forger.public_key.unlink()
    sign(workspace, "lr:1", forger.key_id)
    trusted.public_key.with_suffix(".kept").rename(trusted.public_key)
    _sql(workspace, "DELETE FROM version_signatures WHERE signing_key_id = :k", k=trusted.key_id)
    _sql(workspace, "UPDATE version_signatures SET signing_key_id = :k", k=trusted.key_id)
    message = _refusal(workspace, version)
    assert f"its signature by key {trusted.key_id} does not verify" in message


def test_an_altered_signature_record_does_not_verify(
    workspace: Workspace, version: ModelVersion
) -> None:
    """Rewriting the stored payload to match changed metadata needs the private key."""
    create_key(workspace)
    signed = sign(workspace, "lr:1")
    envelope = json.loads(signed.record.envelope)
    fields = json.loads(envelope["payload"])
    fields["framework"] = "xgboost"
    envelope["payload"] = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    _sql(workspace, "UPDATE version_signatures SET signature = :s", s=json.dumps(envelope))
    _sql(workspace, "UPDATE versions SET framework = 'xgboost'")
    assert "does not verify (the signature record was altered)" in _refusal(workspace, version)

    _sql(workspace, "UPDATE version_signatures SET signature = 'garbage'")
    assert "does not verify" in _refusal(workspace, version)


def test_one_valid_trusted_signature_is_enough(workspace: Workspace, version: ModelVersion) -> None:
    first = create_key(workspace)
    second = create_key(workspace)
    with pytest.raises(InvalidInput, match="choose one with --key"):
        sign(workspace, "lr:1")
    sign(workspace, "lr:1", first.key_id)
    sign(workspace, "lr:1", second.key_id)
    first.public_key.unlink()
    assert check_signed(workspace, version).key_id == second.key_id
    records = SignatureStore(workspace.store.engine).for_version(version)
    assert {record.key_id for record in records} == {first.key_id, second.key_id}
    assert verify_version(version, records, trusted_keys(workspace.home.secrets))


def test_signing_needs_a_key_and_the_permission(
    workspace: Workspace, version: ModelVersion
) -> None:
    with pytest.raises(NotFound, match="dockyard keys signing-create"):
        sign(workspace, "lr:1")
    with pytest.raises(NotFound, match="no signing key 0123456789abcdef"):
        sign(workspace, "lr:1", "0123456789abcdef")
    deployer = Principal("ci", Role.DEPLOYER)
    with pytest.raises(Forbidden, match="may not manage keys"):
        create_key(workspace, deployer)
    create_key(workspace)
    with pytest.raises(Forbidden, match="may not sign"):
        sign(workspace, "lr:1", actor=deployer)
    scoped = Principal("release", Role.ADMIN, models=frozenset({"other"}))
    with pytest.raises(Forbidden, match="not allowed to use model 'lr'"):
        sign(workspace, "lr:1", actor=scoped)
    with pytest.raises(InvalidInput, match="16 lowercase hexadecimal"):
        sign(workspace, "lr:1", "../../etc/passwd")


def test_the_signing_key_survives_an_encryption_key_rotation(
    workspace: Workspace, version: ModelVersion
) -> None:
    created = create_key(workspace)
    secrets_dir: Path = workspace.home.secrets
    old = _cipher(workspace)
    rotated = Cipher([new_key(), *old.keys])
    write_key_file(secrets_dir, rotated.keys)
    assert reencrypt_files(secrets_dir, rotated) >= 1
    write_key_file(secrets_dir, rotated.keys[:1])
    assert sign(workspace, "lr:1").record.key_id == created.key_id
    check_signed(workspace, version)


def test_a_damaged_trust_anchor_is_named(workspace: Workspace, version: ModelVersion) -> None:
    create_key(workspace)
    sign(workspace, "lr:1")
    bad = workspace.home.secrets / "signing-ffffffffffffffff.pub"
    bad.write_text("not a key")
    with pytest.raises(DockyardError, match=f"trusted signing key {bad} cannot be read"):
        check_signed(workspace, version)
