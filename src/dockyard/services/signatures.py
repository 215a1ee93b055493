"""Signing versions and serving only signed ones: the workspace joined with ``security.signing``.

``sign`` is ``dockyard models sign``; ``load_signed`` is how ``--require-signed`` loads a version:
the signature check first, then the artifact's bytes against the signed digest.
``load_for_serving`` is how every server and offline prediction loads a version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dockyard.encryption import Cipher, open_cipher
from dockyard.errors import ArtifactCorrupt, Forbidden
from dockyard.registry.artifacts import MISSING
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.registry.lineage import version_skew
from dockyard.registry.records import ModelVersion
from dockyard.runtimes.base import Runtime
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, local_user, require
from dockyard.security.signing import (
    SignatureRecord,
    SignatureStore,
    Signed,
    create_signing_key,
    public_key_path,
    sign_version,
    trusted_keys,
    verify_version,
)
from dockyard.services.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewSigningKey:
    key_id: str
    public_key: Path
    """The trust anchor to copy into the secrets folder of every host that serves signed models."""


def _cipher(workspace: Workspace) -> Cipher:
    return open_cipher(workspace.home.secrets, workspace.settings.encryption_key)


def create_key(workspace: Workspace, actor: Principal | None = None) -> NewSigningKey:
    """A new signing key in the workspace's home, as ``actor`` (default: the local user); its
    audit entry commits once the key's files are written."""
    actor = actor or local_user()
    secrets_dir = workspace.home.secrets
    engine = workspace.store.engine
    with database_errors(engine), write_transaction(engine) as connection:
        key_id = create_signing_key(secrets_dir, _cipher(workspace), actor)
        append(connection, AuditEntry(actor.actor, "signing_key.create", f"signing-key:{key_id}"))
    return NewSigningKey(key_id, public_key_path(secrets_dir, key_id))


def sign(
    workspace: Workspace, ref: str, key_id: str | None = None, actor: Principal | None = None
) -> Signed:
    """Sign the version ``ref`` names with the home's key ``key_id`` (None: its only one).

    The artifact is re-hashed first: a signature vouches for bytes, so corrupt ones are refused
    rather than signed."""
    actor = actor or local_user()
    version = workspace.resolve(ref)
    require(actor, SERVICES["sign"], version.model)
    workspace.artifacts.verified_path(version.artifact.digest)
    return sign_version(
        SignatureStore(workspace.store.engine),
        workspace.home.secrets,
        _cipher(workspace),
        actor,
        version,
        key_id,
    )


def check_signed(workspace: Workspace, version: ModelVersion) -> SignatureRecord:
    """The valid signature of ``version`` by a key this home trusts, else Forbidden with the
    reason (not signed, untrusted key, altered signature, metadata changed)."""
    records = SignatureStore(workspace.store.engine).for_version(version)
    return verify_version(version, records, trusted_keys(workspace.home.secrets))


def load_signed(workspace: Workspace, version: ModelVersion) -> Runtime:
    """Load ``version`` only if it is signed and its artifact's bytes are the signed ones.

    The load re-hashes the artifact already; once the signature check has shown the recorded
    digest is the signed one, a mismatch there means the bytes changed since signing."""
    check_signed(workspace, version)
    try:
        return workspace.load(version)
    except ArtifactCorrupt as exc:
        found = (
            "the stored file is missing"
            if exc.actual == MISSING
            else f"the stored file {exc.path} has sha256 {exc.actual}"
        )
        raise Forbidden(
            f"{version.ref}: its artifact's bytes do not match the signed digest (signed sha256 "
            f"{exc.expected}, {found})"
        ) from exc


def load_for_serving(workspace: Workspace, version: ModelVersion) -> Runtime:
    """Load ``version`` to predict with (``dockyard serve`` and ``dockyard predict`` alike):
    signature-checked when the ``require_signed`` setting is on, with a warning for each package
    the model loads with whose version is not the one it was registered with."""
    for package, recorded, installed in version_skew(version.framework, version.lineage.packages):
        logger.warning(
            "%s was registered with %s %s and loads with %s %s: its predictions may differ or "
            "fail; install %s==%s where it is served, or register it again here",
            version.ref,
            package,
            recorded,
            package,
            installed,
            package,
            recorded,
        )
    if workspace.settings.require_signed:
        return load_signed(workspace, version)
    return workspace.load(version)
