"""API keys: their format, the keyed hash they are stored under, and the in-memory ring a server
checks them against without touching the database.

A key is ``dk_<id>_<secret>``: the id (public: listed, revoked, logged) and 256 random bits from
``secrets``. Only a keyed hash of the whole key is stored: BLAKE2b-256 in its keyed mode (a MAC, as
HMAC-SHA-256 is, at a quarter of its cost here: one C call). A fast keyed hash is right for random
keys (nothing to brute-force), so checking one costs under a microsecond, and the comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dockyard.errors import Unauthenticated
from dockyard.home import secret_file
from dockyard.security.principals import Principal, Role

PREFIX = "dk_"
ID_BYTES = 6
SECRET_BYTES = 32
HASH_KEY_FILE = "api-key-hash-key"
HASH_KEY_BYTES = 32
"""The hash key made for a home; BLAKE2b takes keys of at most 64 bytes (``api_key_secret``
longer than that is hashed down first)."""
DIGEST_BYTES = 32
MAX_KEY_BYTES = 64
NEVER = float("inf")
VERIFIED_LIMIT = 10_000
"""Most verified keys a ring remembers between two loads (about a second)."""


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``."""
    key_id = secrets.token_hex(ID_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id_of(key: str) -> str | None:
    """The id part of something that looks like a key, else None."""
    if not key.startswith(PREFIX):
        return None
    key_id, separator, secret = key[len(PREFIX) :].partition("_")
    return key_id if separator and secret and len(key_id) == 2 * ID_BYTES else None


class KeyHasher:
    """Keyed BLAKE2b-256 under the deployment's hash key."""

    def __init__(self, hash_key: bytes) -> None:
        self._key = hash_key

    @classmethod
    def open(cls, secrets_dir: Path, setting: str) -> KeyHasher:
        """The hasher of a deployment: the ``api_key_secret`` setting, else the home's hash key
        file (created when missing)."""
        if setting:
            raw = setting.encode()
            return cls(raw if len(raw) <= MAX_KEY_BYTES else hashlib.sha256(raw).digest())
        make = lambda: secrets.token_bytes(HASH_KEY_BYTES)  # noqa: E731
        return cls(secret_file(secrets_dir / HASH_KEY_FILE, make))

    def digest(self, key: str) -> str:
        """The stored form of ``key``: its keyed hash, in hex."""
        return self.digest_bytes(key).hex()

    def digest_bytes(self, key: str) -> bytes:
        return hashlib.blake2b(key.encode(), key=self._key, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class KeyRecord:
    """What is stored of one API key (never the key itself)."""

    key_id: str
    name: str
    role: Role
    models: frozenset[str] | None
    hash: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rate: str | None = None
    """Requests allowed to this key, e.g. ``100/s``; None: its role's limit, if any."""

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def principal(self) -> Principal:
        return Principal(
            name=self.name, role=self.role, models=self.models, kind="key", key_id=self.key_id
        )

    def to_dict(self, now: datetime) -> dict[str, object]:
        """What may be shown of the key: everything but its hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": self.role.value,
            "models": sorted(self.models) if self.models is not None else None,
            "rate": self.rate,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "state": self.state(now),
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal
    expires: float
    """Unix time; infinity when the key does not expire."""
    revoked: bool


class KeyRing:
    """Every key of the deployment, in memory: a request's key is checked with one dict lookup,
    one keyed hash and one constant-time comparison. ``load`` swaps the whole ring at once."""

    def __init__(self, hasher: KeyHasher) -> None:
        self._hasher = hasher
        self._entries: dict[str, _Entry] = {}
        self._verified: dict[str, _Entry] = {}
        """Keys whose hash matched since the last ``load``: a client's next request with the same
        key costs one dict lookup instead of the hash (the lookup hashes the string with Python's
        per-process random seed first, so its timing says nothing about other keys)."""

    def load(self, records: Iterable[KeyRecord]) -> None:
        self._verified = {}
        self._entries = {
            record.key_id: _Entry(
                digest=bytes.fromhex(record.hash),
                principal=record.principal,
                expires=record.expires_at.timestamp() if record.expires_at else NEVER,
                revoked=record.revoked_at is not None,
            )
            for record in records
        }

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._entries

    def authenticate(self, key: str) -> Principal:
        """The principal of ``key``; Unauthenticated when it is unknown, expired or revoked."""
        entry = self._verified.get(key)
        if entry is None:
            entry = self._verify(key)
        if entry.revoked:
            raise Unauthenticated(f"API key {entry.principal.key_id} has been revoked")
        if entry.expires is not NEVER and entry.expires <= time.time():
            raise Unauthenticated(f"API key {entry.principal.key_id} has expired")
        return entry.principal

    def _verify(self, key: str) -> _Entry:
        """The entry whose stored hash is ``key``'s (compared in constant time), remembered."""
        key_id = key_id_of(key)
        entry = self._entries.get(key_id) if key_id is not None else None
        given = self._hasher.digest_bytes(key)
        if entry is None or not hmac.compare_digest(entry.digest, given):
            raise Unauthenticated("invalid API key")
        if len(self._verified) < VERIFIED_LIMIT:
            self._verified[key] = entry
        return entry
