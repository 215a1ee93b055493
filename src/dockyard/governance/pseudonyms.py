"""Keyed pseudonyms for the ``hash`` rule: HMAC-SHA256 under one secret key per home, so a value
gets the same pseudonym in every worker, server and restart (joins and label feedback still
work), and no one without the key can test a guess (as they could against a plain hash).

The key: ``secrets/pseudonym-key.sealed``, encrypted at rest with the home's encryption key (and
re-encrypted by ``dockyard keys rotate-encryption`` like every sealed file) when the home has
one (the ``encryption_key`` setting or its key file), else ``secrets/pseudonym-key`` (mode 0600).
Created on first use; losing it changes every pseudonym from then on."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from dockyard.config import Settings
from dockyard.encryption import SEALED_SUFFIX, key_file, open_cipher, unseal_file
from dockyard.errors import DockyardError
from dockyard.home import Home, secret_file

KEY_NAME = "pseudonym-key"
KEY_BYTES = 32
PSEUDONYM_CHARS = 32
"""Hex digits kept of the HMAC: 128 bits, no collision in any log."""


class Pseudonymizer:
    """Text → its pseudonym under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, text: str) -> str:
        """``text``'s pseudonym: the first ``PSEUDONYM_CHARS`` hex digits of HMAC-SHA256 over its
        UTF-8 bytes."""
        digest = hmac.digest(self._key, text.encode("utf-8", "surrogatepass"), "sha256")
        return digest[: PSEUDONYM_CHARS // 2].hex()


def open_pseudonymizer(settings: Settings, home: Home) -> Pseudonymizer:
    """The home's pseudonymizer, its key created (sealed when the home has an encryption key)
    when missing. Processes starting at once agree on one key."""
    folder = home.secrets
    plain = folder / KEY_NAME
    sealed = folder / f"{KEY_NAME}{SEALED_SUFFIX}"
    encrypted = sealed.exists() or bool(settings.encryption_key) or key_file(folder).exists()
    if plain.exists() or not encrypted:
        return Pseudonymizer(_checked(plain, secret_file(plain, _new_key)))
    cipher = open_cipher(folder, settings.encryption_key)
    secret_file(sealed, lambda: cipher.encrypt(_new_key(), sealed.name.encode()))
    return Pseudonymizer(_checked(sealed, unseal_file(sealed, cipher)))


def _new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _checked(path: Path, key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise DockyardError(
            f"pseudonym key {path} is damaged ({len(key)} bytes, not {KEY_BYTES}); restore it "
            "from a backup (a new key would give every value a new pseudonym)"
        )
    return key
