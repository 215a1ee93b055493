"""Signed versions: Ed25519 signatures over a version's artifact digest and identity.

**What is signed.** The payload of a version is the UTF-8 bytes of its canonical JSON: compact
(``","`` and ``":"`` separators), keys sorted, ASCII only, of ::

    {"type": "dockyard.version.v1", "name": …, "version": …, "framework": …,
     "artifact_digest": …, "artifact_format": …, "artifact_options": {…},
     "allow_pickle": …, "trusted_types": […], "signature": Signature.to_dict()}

The digest pins the bytes; the rest pins how they are loaded (framework, format, options such as
a Python function's entrypoint, pickle and extra skops types) and what the version takes and
gives (its input/output signature). ``type`` keeps a signature from being valid for any other
kind of Dockyard message.

**Where.** A row of ``version_signatures`` per (version, signing key); its ``signature`` column
holds ``{"payload": PAYLOAD TEXT, "sig": BASE64}``, so a check can say which fields changed since
signing (the payload is only believed once the signature over it verifies).

**Keys.** ``secrets/signing-KEYID.sealed``: the private key (PKCS#8 PEM), encrypted at rest like
every ``*.sealed`` file (rotated by ``dockyard keys rotate-encryption``). ``secrets/signing-
KEYID.pub``: the public key (PEM). KEYID is the first 16 hex digits of the SHA-256 of the raw
32-byte public key. The ``*.pub`` files of the home are the trust anchors: nothing in the
database decides which keys are trusted, so write access to the registry cannot forge one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection, Engine, delete, insert, select

from dockyard.encryption import Cipher, seal_file, unseal_file
from dockyard.errors import DockyardError, Forbidden, InvalidInput, NotFound
from dockyard.home import write_secret
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.records import ModelVersion
from dockyard.registry.store import utc_now
from dockyard.registry.tables import models, version_signatures, versions
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require

PAYLOAD_TYPE = "dockyard.version.v1"
KEY_PREFIX = "signing-"
PUBLIC_SUFFIX = ".pub"
PRIVATE_SUFFIX = ".sealed"
KEY_ID_HEX = 16
KEY_ID_PATTERN = re.compile(rf"^[0-9a-f]{{{KEY_ID_HEX}}}$")
SIGNATURE_BYTES = 64
CREATE_HINT = "create one with: dockyard keys signing-create"


@dataclass(frozen=True)
class SignatureRecord:
    """One stored signature of a version: the key that made it, the envelope, who and when."""

    key_id: str
    envelope: str
    signed_at: datetime
    signed_by: str


@dataclass(frozen=True)
class Signed:
    """What ``sign_version`` did: the version, its new signature, whether it replaced an older
    signature by the same key."""

    version: ModelVersion
    record: SignatureRecord
    replaced: bool


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The short public name of a signing key: the start of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def public_key_path(secrets_dir: Path, key_id: str) -> Path:
    return secrets_dir / f"{KEY_PREFIX}{check_key_id(key_id)}{PUBLIC_SUFFIX}"


def private_key_path(secrets_dir: Path, key_id: str) -> Path:
    return secrets_dir / f"{KEY_PREFIX}{check_key_id(key_id)}{PRIVATE_SUFFIX}"


def check_key_id(key_id: str) -> str:
    """``key_id`` if it is 16 lowercase hex digits (it becomes part of a file name)."""
    if not KEY_ID_PATTERN.match(key_id):
        raise InvalidInput(
            f"signing key id {key_id!r} must be {KEY_ID_HEX} lowercase hexadecimal digits"
        )
    return key_id


def create_signing_key(secrets_dir: Path, cipher: Cipher, actor: Principal) -> str:
    """A new Ed25519 key pair in ``secrets_dir``: the private key sealed, the public key in PEM
    (trusted from now on by this home's ``--require-signed`` servers). Returns its id."""
    require(actor, SERVICES["create_signing_key"])
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    key_id = key_id_of(public_key)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Private half first: a public key without its private key would be a trust anchor no one
    # can sign with, the other way round only an unusable file.
    seal_file(private_key_path(secrets_dir, key_id), cipher, private_pem)
    write_secret(public_key_path(secrets_dir, key_id), public_pem)
    return key_id


def signing_key(
    secrets_dir: Path, cipher: Cipher, key_id: str | None = None
) -> tuple[str, Ed25519PrivateKey]:
    """The private key ``key_id`` (None: the home's only one), unsealed."""
    if key_id is None:
        found = sorted(
            path.name[len(KEY_PREFIX) : -len(PRIVATE_SUFFIX)]
            for path in secrets_dir.glob(f"{KEY_PREFIX}*{PRIVATE_SUFFIX}")
        )
        if not found:
            raise NotFound(f"no signing key in {secrets_dir}; {CREATE_HINT}")
        if len(found) > 1:
            raise InvalidInput(
                f"{len(found)} signing keys in {secrets_dir} ({', '.join(found)}): "
                "choose one with --key"
            )
        key_id = found[0]
    path = private_key_path(secrets_dir, key_id)
    if not path.is_file():
        raise NotFound(f"no signing key {key_id} in {secrets_dir}; {CREATE_HINT}")
    try:
        private_key = serialization.load_pem_private_key(unseal_file(path, cipher), password=None)
    except ValueError:
        raise DockyardError(f"signing key {path} is damaged; create a new one") from None
    if not isinstance(private_key, Ed25519PrivateKey) or key_id_of(private_key.public_key()) != (
        key_id
    ):
        raise DockyardError(f"{path} does not hold the Ed25519 key {key_id}; create a new one")
    return key_id, private_key


def trusted_keys(secrets_dir: Path) -> dict[str, Ed25519PublicKey]:
    """The trust anchors: every ``signing-*.pub`` file in ``secrets_dir``, by the id computed
    from the key itself (never from the file name, never from the database)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(secrets_dir.glob(f"{KEY_PREFIX}*{PUBLIC_SUFFIX}")):
        try:
            public_key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise DockyardError(
                f"trusted signing key {path} cannot be read ({exc}); fix or remove it"
            ) from exc
        if not isinstance(public_key, Ed25519PublicKey):
            raise DockyardError(f"trusted signing key {path} is not an Ed25519 public key")
        keys[key_id_of(public_key)] = public_key
    return keys


def payload_fields(version: ModelVersion) -> dict[str, Any]:
    """What a signature covers, as plain JSON values (see the module docstring)."""
    fields = {
        "type": PAYLOAD_TYPE,
        "name": version.model,
        "version": version.version,
        "framework": version.framework,
        "artifact_digest": version.artifact.digest,
        "artifact_format": version.artifact.format,
        "artifact_options": dict(version.artifact.options),
        "allow_pickle": version.allow_pickle,
        "trusted_types": list(version.trusted_types),
        "signature": version.signature.to_dict(),
    }
    normalized: dict[str, Any] = json.loads(_canonical(fields))
    return normalized


def payload(version: ModelVersion) -> bytes:
    """The exact bytes signed for ``version``: canonical JSON of ``payload_fields``."""
    return _canonical(payload_fields(version)).encode("ascii")


def sign_payload(private_key: Ed25519PrivateKey, version: ModelVersion) -> str:
    """The envelope stored for a signature: the payload text and the signature over it."""
    data = payload(version)
    signature = base64.b64encode(private_key.sign(data)).decode("ascii")
    return _canonical({"payload": data.decode("ascii"), "sig": signature})


class SignatureStore:
    """The ``version_signatures`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def for_version(self, version: ModelVersion) -> list[SignatureRecord]:
        """Every signature stored for ``version``, oldest first."""
        with database_errors(self._engine), self._engine.connect() as connection:
            version_id = _version_id(connection, version)
            rows = connection.execute(
                select(version_signatures)
                .where(version_signatures.c.version_id == version_id)
                .order_by(version_signatures.c.id)
            ).all()
        return [
            SignatureRecord(row.signing_key_id, row.signature, row.signed_at, row.signed_by)
            for row in rows
        ]

    def put(
        self, version: ModelVersion, record: SignatureRecord, audit: AuditEntry | None = None
    ) -> bool:
        """Store ``record``, replacing ``version``'s signature by the same key, and append
        ``audit`` in the same transaction; whether one was replaced."""
        with database_errors(self._engine), write_transaction(self._engine) as connection:
            version_id = _version_id(connection, version)
            replaced = connection.execute(
                delete(version_signatures).where(
                    version_signatures.c.version_id == version_id,
                    version_signatures.c.signing_key_id == record.key_id,
                )
            ).rowcount
            connection.execute(
                insert(version_signatures).values(
                    version_id=version_id,
                    signing_key_id=record.key_id,
                    signature=record.envelope,
                    signed_at=record.signed_at,
                    signed_by=record.signed_by,
                )
            )
            if audit is not None:
                append(connection, audit, record.signed_at)
        return bool(replaced)


def sign_version(
    store: SignatureStore,
    secrets_dir: Path,
    cipher: Cipher,
    actor: Principal,
    version: ModelVersion,
    key_id: str | None = None,
) -> Signed:
    """Sign ``version`` as it is now with the home's key ``key_id`` (None: its only one) and
    store the signature; an earlier signature by the same key is replaced."""
    require(actor, SERVICES["sign"], version.model)
    key_id, private_key = signing_key(secrets_dir, cipher, key_id)
    record = SignatureRecord(
        key_id=key_id,
        envelope=sign_payload(private_key, version),
        signed_at=utc_now(),
        signed_by=actor.actor,
    )
    audit = AuditEntry(
        actor.actor, "model.sign", version.ref, version.model, {"signing_key": key_id}
    )
    replaced = store.put(version, record, audit)
    return Signed(version, record, replaced)


def verify_version(
    version: ModelVersion,
    records: Sequence[SignatureRecord],
    trusted: Mapping[str, Ed25519PublicKey],
) -> SignatureRecord:
    """The signature by a trusted key that covers ``version`` as it is now; else Forbidden saying
    why: not signed, signed only by untrusted keys, a signature record that does not verify, or
    metadata that changed since signing (naming the fields). The artifact's bytes are the
    caller's to check against the digest (this one does not read files)."""
    ref = version.ref
    if not records:
        raise Forbidden(f"{ref} is not signed; sign it with: dockyard models sign {ref}")
    candidates = [record for record in records if record.key_id in trusted]
    if not candidates:
        # Key ids come from the database: shown quoted unless they look like one.
        untrusted = ", ".join(sorted({_shown(record.key_id) for record in records}))
        raise Forbidden(
            f"{ref}: signed by an untrusted key {untrusted} (trusted keys are the "
            f"{KEY_PREFIX}KEYID{PUBLIC_SUFFIX} files in the home's secrets folder)"
        )
    current = payload_fields(version)
    problems: list[str] = []
    for record in candidates:
        signed = _verified_fields(record, trusted[record.key_id])
        if signed is None:
            problems.append(
                f"{ref}: its signature by key {record.key_id} does not verify "
                "(the signature record was altered)"
            )
            continue
        changed = sorted(
            key for key in current.keys() | signed.keys() if current.get(key) != signed.get(key)
        )
        if not changed:
            return record
        # A change of identity is the more useful message: put it first.
        problems.insert(
            0,
            f"{ref}: its metadata changed since it was signed by key {record.key_id} "
            f"({', '.join(changed)})",
        )
    raise Forbidden(problems[0])


def _verified_fields(
    record: SignatureRecord, public_key: Ed25519PublicKey
) -> dict[str, Any] | None:
    """The signed payload of ``record`` if its signature verifies under ``public_key``."""
    try:
        envelope = json.loads(record.envelope)
        text, signature = envelope["payload"], base64.b64decode(envelope["sig"], validate=True)
        if not isinstance(text, str) or len(signature) != SIGNATURE_BYTES:
            return None
        public_key.verify(signature, text.encode("ascii"))
        fields = json.loads(text)
    except (ValueError, TypeError, KeyError, binascii.Error, InvalidSignature):
        return None
    return fields if isinstance(fields, dict) else None


def _shown(key_id: str) -> str:
    return key_id if KEY_ID_PATTERN.match(key_id) else repr(key_id[: KEY_ID_HEX * 2])


def _version_id(connection: Connection, version: ModelVersion) -> int:
    row = connection.execute(
        select(versions.c.id)
        .join(models, models.c.id == versions.c.model_id)
        .where(models.c.name == version.model, versions.c.version == version.version)
    ).first()
    if row is None:
        raise NotFound(f"no version {version.ref} in the registry")
    version_id: int = row.id
    return version_id


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
