"""Backups encrypted under a passphrase: a key derived with scrypt, the archive sealed in chunks.

A backup can be gigabytes, so it is sealed one ``CHUNK_BYTES`` piece at a time with the AES-256-GCM
``Cipher`` of ``dockyard.encryption``. Each chunk is bound to the file's salt, its position and
whether it is the last one: chunks cannot be reordered, dropped or moved to another backup, and a
truncated file is noticed. The scrypt cost is fixed here, never read from the file, so a crafted
header cannot make a reader spend unbounded memory.

File: ``MAGIC``, 16 bytes of salt, then chunks, each a 4-byte big-endian length (top bit: last
chunk) and the sealed bytes.
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

from dockyard.encryption import Cipher
from dockyard.errors import BackupInvalid, DockyardError, InvalidInput

MAGIC = b"DOCKYARD-BACKUP-AES1\n"
SALT_BYTES = 16
CHUNK_BYTES = 1024 * 1024
SEALED_OVERHEAD = 64
"""More than what ``Cipher.encrypt`` adds to a chunk (header, key id, nonce, tag)."""
LAST = 0x8000_0000
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 8
PASSPHRASE_ENV = "DOCKYARD_BACKUP_PASSPHRASE"


def is_encrypted(head: bytes) -> bool:
    """Whether a backup file starting with ``head`` is sealed under a passphrase."""
    return head.startswith(MAGIC)


def derive_cipher(passphrase: str, salt: bytes) -> Cipher:
    """The cipher a passphrase and a backup's salt give (scrypt: slow to guess by design)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInput(f"the backup passphrase must be at least {MIN_PASSPHRASE} characters")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return Cipher([kdf.derive(passphrase.encode())])


def _context(salt: bytes, index: int, is_last: bool) -> bytes:
    return MAGIC + salt + struct.pack(">Q?", index, is_last)


class SealingWriter(io.RawIOBase):
    """A write-only stream that seals what it is given into ``out``; ``close`` writes the last
    chunk (without it the file reads as truncated)."""

    def __init__(self, out: BinaryIO, passphrase: str) -> None:
        super().__init__()
        self._out = out
        self._salt = os.urandom(SALT_BYTES)
        self._cipher = derive_cipher(passphrase, self._salt)
        self._buffer = bytearray()
        self._index = 0
        out.write(MAGIC + self._salt)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK_BYTES:
            self._seal(bytes(self._buffer[:CHUNK_BYTES]), is_last=False)
            del self._buffer[:CHUNK_BYTES]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buffer), is_last=True)
            self._buffer.clear()
        super().close()

    def _seal(self, plain: bytes, *, is_last: bool) -> None:
        token = self._cipher.encrypt(plain, _context(self._salt, self._index, is_last))
        self._out.write(struct.pack(">I", len(token) | (LAST if is_last else 0)) + token)
        self._index += 1


class OpeningReader(io.RawIOBase):
    """A read-only stream of what ``SealingWriter`` sealed into ``source``; BackupInvalid on a
    wrong passphrase, a damaged or truncated file."""

    def __init__(self, source: BinaryIO, passphrase: str) -> None:
        super().__init__()
        self._source = source
        head = source.read(len(MAGIC) + SALT_BYTES)
        if not is_encrypted(head) or len(head) < len(MAGIC) + SALT_BYTES:
            raise BackupInvalid("the backup is not an encrypted Dockyard backup")
        self._salt = head[len(MAGIC) :]
        self._cipher = derive_cipher(passphrase, self._salt)
        self._plain = b""
        self._index = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._plain and not self._ended:
            self._plain = self._open_next()
        count = min(len(target), len(self._plain))
        target[:count] = self._plain[:count]
        self._plain = self._plain[count:]
        return count

    def _open_next(self) -> bytes:
        prefix = self._source.read(4)
        if len(prefix) < 4:
            raise BackupInvalid("the encrypted backup is truncated: its last part is missing")
        (word,) = struct.unpack(">I", prefix)
        is_last, length = bool(word & LAST), word & ~LAST
        if length > CHUNK_BYTES + SEALED_OVERHEAD:
            raise BackupInvalid(f"the encrypted backup is damaged: a part claims {length} bytes")
        token = self._source.read(length)
        if len(token) < length:
            raise BackupInvalid("the encrypted backup is truncated: its last part is missing")
        try:
            plain = self._cipher.decrypt(token, _context(self._salt, self._index, is_last))
        except DockyardError:
            where = "wrong passphrase, or the" if self._index == 0 else "the"
            raise BackupInvalid(
                f"cannot decrypt the backup ({where} file was altered at part {self._index})"
            ) from None
        self._index += 1
        if is_last:
            self._ended = True
            if self._source.read(1):
                raise BackupInvalid("the encrypted backup has data after its last part")
        return plain
