"""Encryption at rest: AES-256-GCM round trips, tampering and moving are caught, keys come from
the setting or a private key file, rotation re-encrypts what is sealed, sealed settings load."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from clirun import run_cli as _cli
from dockyard.config import load_settings, seal_setting
from dockyard.encryption import (
    MAGIC,
    Cipher,
    encode_key,
    key_file,
    new_key,
    open_cipher,
    seal_file,
    unseal_file,
)
from dockyard.errors import DockyardError, InvalidInput


def test_round_trip_and_every_ciphertext_is_fresh() -> None:
    cipher = Cipher([new_key()])
    sealed = cipher.encrypt(b"payload", b"where")
    assert sealed.startswith(MAGIC)
    assert b"payload" not in sealed
    assert cipher.encrypt(b"payload", b"where") != sealed  # a new nonce each time
    assert cipher.decrypt(sealed, b"where") == b"payload"


def test_tampered_moved_or_foreign_data_is_refused() -> None:
    cipher = Cipher([new_key()])
    sealed = bytearray(cipher.encrypt(b"payload", b"file-a"))
    with pytest.raises(DockyardError, match="altered or moved"):
        cipher.decrypt(bytes(sealed), b"file-b")
    sealed[-1] ^= 1
    with pytest.raises(DockyardError, match="altered or moved"):
        cipher.decrypt(bytes(sealed), b"file-a")
    with pytest.raises(DockyardError, match="not among the configured keys"):
        Cipher([new_key()]).decrypt(cipher.encrypt(b"x"), b"")
    with pytest.raises(DockyardError, match="bad header"):
        cipher.decrypt(b"plain text", b"")


def test_older_keys_decrypt_and_only_the_first_encrypts() -> None:
    old, new = new_key(), new_key()
    by_old = Cipher([old]).encrypt(b"x")
    both = Cipher([new, old])
    assert both.decrypt(by_old) == b"x"
    assert not both.is_current(by_old)
    assert both.is_current(both.encrypt(b"x"))


def test_the_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    first = open_cipher(tmp_path)
    assert key_file(tmp_path).stat().st_mode & 0o777 == 0o600
    assert open_cipher(tmp_path).keys == first.keys


def test_the_setting_gives_the_keys_and_is_checked(tmp_path: Path) -> None:
    key = new_key()
    assert open_cipher(tmp_path, encode_key(key)).keys == (key,)
    assert not key_file(tmp_path).exists()
    with pytest.raises(InvalidInput, match="must be base64") as caught:
        open_cipher(tmp_path, "not base64!")
    assert "not base64!" not in str(caught.value)
    with pytest.raises(InvalidInput, match="32 bytes"):
        open_cipher(tmp_path, base64.b64encode(b"short").decode())


def test_sealed_settings_are_encrypted_and_rank_below_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = "postgresql+psycopg://app:s3cret-pass@db.internal/registry"
    path = seal_setting(load_settings({"home": home}, env={}), "database_url", url)
    assert b"s3cret-pass" not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600

    settings = load_settings({"home": home}, env={})
    assert settings.database_url == url
    assert settings.sources["database_url"].startswith("sealed ")
    assert "s3cret" not in repr(settings)
    override = load_settings({"home": home}, env={"DOCKYARD_DATABASE_URL": "sqlite:///x.db"})
    assert override.database_url == "sqlite:///x.db"
    with pytest.raises(InvalidInput, match="not a secret setting"):
        seal_setting(settings, "port", "1")


def test_rotation_re_encrypts_under_a_new_key_and_drops_the_old(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    secrets = home / "secrets"
    secrets.mkdir(parents=True)
    before = open_cipher(secrets)
    sealed = secrets / "thing.sealed"
    seal_file(sealed, before, b"signing key bytes")

    code, out, err = _cli(capsys, "keys", "rotate-encryption", "--home", str(home))

    assert code == 0, err
    assert "re-encrypted 1 item(s)" in out
    after = open_cipher(secrets)
    assert len(after.keys) == 1
    assert after.keys != before.keys
    assert unseal_file(sealed, after) == b"signing key bytes"
    with pytest.raises(DockyardError, match="not among the configured keys"):
        unseal_file(sealed, before)
    assert json.loads(key_file(secrets).read_text())["keys"] == [encode_key(after.keys[0])]


def test_rotation_with_the_setting_moves_data_from_old_to_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    old, new = new_key(), new_key()
    seal_file(home / "secrets" / "a.sealed", Cipher([old]), b"data")
    monkeypatch.setenv("DOCKYARD_ENCRYPTION_KEY", encode_key(old))
    code, _, err = _cli(capsys, "keys", "rotate-encryption", "--home", str(home))
    assert code == 2
    assert "set it to NEW,OLD" in err

    monkeypatch.setenv("DOCKYARD_ENCRYPTION_KEY", f"{encode_key(new)},{encode_key(old)}")
    code, out, err = _cli(capsys, "keys", "rotate-encryption", "--home", str(home))
    assert code == 0, err
    assert unseal_file(home / "secrets" / "a.sealed", Cipher([new])) == b"data"
