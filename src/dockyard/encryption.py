"""Encryption at rest: AES-256-GCM for everything sensitive Dockyard stores, in one module.

The key comes from the ``encryption_key`` setting (``DOCKYARD_ENCRYPTION_KEY``: base64 of 32 bytes;
``NEW,OLD,…`` during a rotation: the first encrypts, all decrypt), else from a key file created in
the home (``secrets/encryption-keys``, mode 0600). A ciphertext names the key that made it (an id
derived from the key), so a rotation can move data from the old key to the new one item by item.
Sealed files (``*.sealed`` in the home's ``secrets`` folder) are bound to their file name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from dockyard.errors import DockyardError, InvalidInput
from dockyard.home import secret_file, write_secret

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_BYTES = 8
MAGIC = b"DKE1"
KEY_FILE_NAME = "encryption-keys"
SEALED_SUFFIX = ".sealed"
KEY_SETTING = "encryption_key (DOCKYARD_ENCRYPTION_KEY)"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_id(key: bytes) -> bytes:
    """A short public name of a key: the start of its SHA-256."""
    return hashlib.sha256(b"dockyard-key-id" + key).digest()[:KEY_ID_BYTES]


class Cipher:
    """AES-256-GCM with a primary key (encrypts) and older keys (only decrypt)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise InvalidInput("no encryption key given")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise InvalidInput(f"an encryption key must be {KEY_BYTES} bytes, got {len(key)}")
        # cryptography on first use: settings import this module, and most commands encrypt nothing.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.keys = tuple(keys)
        self._primary = key_id(keys[0])
        self._aead = {key_id(key): AESGCM(key) for key in keys}

    @property
    def primary_id(self) -> str:
        return self._primary.hex()

    def encrypt(self, plaintext: bytes, context: bytes = b"") -> bytes:
        """``plaintext`` sealed under the primary key; ``context`` (e.g. where it is stored) must
        be given again to decrypt, so a sealed value cannot be moved elsewhere."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self._primary].encrypt(nonce, plaintext, context)
        return MAGIC + self._primary + nonce + sealed

    def decrypt(self, token: bytes, context: bytes = b"") -> bytes:
        header = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
        if len(token) < header or not token.startswith(MAGIC):
            raise DockyardError("encrypted data is damaged or not Dockyard's (bad header)")
        made_by = token[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]
        aead = self._aead.get(made_by)
        if aead is None:
            raise DockyardError(
                f"encrypted data was made with key {made_by.hex()}, which is not among the "
                f"configured keys ({', '.join(k.hex() for k in self._aead)}); set {KEY_SETTING}"
            )
        from cryptography.exceptions import InvalidTag

        try:
            return aead.decrypt(token[header - NONCE_BYTES : header], token[header:], context)
        except InvalidTag:
            raise DockyardError("encrypted data was altered or moved: it fails its check") from None

    def is_current(self, token: bytes) -> bool:
        """Whether ``token`` is already under the primary key."""
        return token[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES] == self._primary


def parse_keys(text: str) -> list[bytes]:
    """``KEY[,OLDKEY…]`` in base64 as raw keys; an error names the setting, never the value."""
    keys = []
    for part in text.split(","):
        try:
            keys.append(base64.b64decode(part.strip(), validate=True))
        except ValueError:
            raise InvalidInput(f"{KEY_SETTING} must be base64 keys, comma-separated") from None
    return keys


def key_file(secrets_dir: Path) -> Path:
    return secrets_dir / KEY_FILE_NAME


def open_cipher(secrets_dir: Path, key_setting: str = "") -> Cipher:
    """The cipher of a home: the setting's keys, else the home's key file (created when
    missing)."""
    if key_setting:
        return Cipher(parse_keys(key_setting))
    raw = secret_file(key_file(secrets_dir), lambda: _key_file_text([new_key()]))
    try:
        return Cipher([base64.b64decode(text) for text in json.loads(raw)["keys"]])
    except (ValueError, KeyError, TypeError):
        raise DockyardError(
            f"encryption key file {key_file(secrets_dir)} is damaged; restore it from a backup"
        ) from None


def _key_file_text(keys: Sequence[bytes]) -> bytes:
    return json.dumps({"keys": [encode_key(key) for key in keys]}).encode()


def write_key_file(secrets_dir: Path, keys: Sequence[bytes]) -> None:
    write_secret(key_file(secrets_dir), _key_file_text(keys))


def seal_file(path: Path, cipher: Cipher, data: bytes) -> None:
    """Write ``data`` encrypted to ``path`` (mode 0600), bound to the file's name."""
    write_secret(path, cipher.encrypt(data, path.name.encode()))


def unseal_file(path: Path, cipher: Cipher) -> bytes:
    try:
        token = path.read_bytes()
    except OSError as exc:
        raise DockyardError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return cipher.decrypt(token, path.name.encode())
    except DockyardError as exc:
        raise DockyardError(f"{path}: {exc.message}") from None


def sealed_files(secrets_dir: Path) -> Iterator[Path]:
    return iter(sorted(secrets_dir.glob(f"*{SEALED_SUFFIX}")))


def reencrypt_files(secrets_dir: Path, cipher: Cipher) -> int:
    """Re-encrypt every sealed file under the primary key; how many changed. Safe to rerun."""
    changed = 0
    for path in sealed_files(secrets_dir):
        if not cipher.is_current(path.read_bytes()):
            seal_file(path, cipher, unseal_file(path, cipher))
            changed += 1
    return changed
