"""Rotating the encryption key (``dockyard keys rotate-encryption``): everything sealed in the home
re-encrypted under a new key, audited in a transaction held open around the file changes."""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.encryption import (
    Cipher,
    encode_key,
    new_key,
    open_cipher,
    reencrypt_files,
    write_key_file,
)
from dockyard.errors import InvalidInput
from dockyard.registry.audit import AuditEntry, append
from dockyard.registry.db import database_errors, write_transaction
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, require
from dockyard.services.workspace import Workspace


@dataclass(frozen=True)
class Rotated:
    changed: int
    """How many sealed items were re-encrypted."""
    key_id: str
    """The id (not the key) of the key they are sealed under now."""


def rotate_encryption(workspace: Workspace, actor: Principal) -> Rotated:
    """Re-encrypt what the home stores encrypted under a new key, as ``actor``.

    With the home's key file: a new key is made, everything is re-encrypted, the old key is
    dropped (rerun it if it was interrupted). With the ``encryption_key`` setting: it must hold
    ``NEW,OLD`` (re-encrypted from OLD to NEW). The audit entry commits only once the files are
    re-encrypted; a failure on the way leaves no entry (and a rerun finishes the job).
    """
    require(actor, SERVICES["rotate_encryption"])
    secrets_dir = workspace.home.secrets
    setting = workspace.settings.encryption_key
    if setting:
        cipher = open_cipher(secrets_dir, setting)
        if len(cipher.keys) < 2:
            raise InvalidInput(
                "DOCKYARD_ENCRYPTION_KEY holds one key: set it to NEW,OLD (base64, new first) "
                "to re-encrypt from OLD to NEW; a new key: " + encode_key(new_key())
            )
    engine = workspace.store.engine
    with database_errors(engine), write_transaction(engine) as connection:
        if not setting:
            cipher = Cipher([new_key(), *open_cipher(secrets_dir).keys])
            write_key_file(secrets_dir, cipher.keys)
        changed = reencrypt_files(secrets_dir, cipher)
        if not setting:
            write_key_file(secrets_dir, cipher.keys[:1])
        details = {"reencrypted": changed, "keys_from": "setting" if setting else "key file"}
        append(
            connection,
            AuditEntry(
                actor.actor,
                "encryption.rotate",
                f"encryption-key:{cipher.primary_id}",
                details=details,
            ),
        )
    return Rotated(changed, cipher.primary_id)
