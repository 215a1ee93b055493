"""The server's TLS context: HTTPS with ``tls_cert``/``tls_key``, mutual TLS with ``tls_client_ca``.

It is built once, in the process that binds the port, before any worker is forked: a file that
is missing, unreadable or not what it should be stops ``dockyard serve`` with one message naming
the file and the cause, instead of a traceback in each worker (or, for an encrypted key,
OpenSSL asking for a passphrase on the terminal). Forked workers inherit the context, so they
also share its session-ticket keys: a client resumes its session on whichever worker accepts it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.config import Settings
from dockyard.errors import InvalidInput

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files, as given (empty: not set)."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @classmethod
    def of(cls, settings: Settings) -> TlsFiles:
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def server_context(files: TlsFiles) -> ssl.SSLContext | None:
    """The TLS context to serve with (None: no certificate set, plain HTTP).

    TLS 1.2 at least, no renegotiation (a client-driven CPU cost), HTTP/1.1 announced over ALPN
    (the only protocol served); with ``client_ca``, a client without a certificate it signed is
    refused in the handshake.
    """
    if not files.cert:
        return None
    if not files.key:
        raise InvalidInput("tls_cert and tls_key go together: give both or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    _load_identity(context, files.cert, files.key)
    if files.client_ca:
        _load_client_ca(context, files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load_identity(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load the certificate chain and its key, each checked on its own to name the bad one."""
    _check_certificates("tls_cert", cert)
    key_text = _read("tls_key", key)
    if b"PRIVATE KEY-----" not in key_text:
        raise InvalidInput(f"tls_key {key}: no PEM private key in it")
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase(key))
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InvalidInput(
                f"tls_key {key} does not belong to the certificate in tls_cert {cert} "
                "(its first certificate must be the server's own, then the chain)"
            ) from None
        raise InvalidInput(f"tls_key {key}: not a valid PEM private key") from None


def _load_client_ca(context: ssl.SSLContext, client_ca: str) -> None:
    _check_certificates("tls_client_ca", client_ca)
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError:
        raise InvalidInput(f"tls_client_ca {client_ca}: not a valid PEM CA bundle") from None


def _check_certificates(setting: str, path: str) -> None:
    """Raise InvalidInput unless ``path`` holds PEM certificates OpenSSL can parse."""
    text = _read(setting, path)
    if PEM_CERTIFICATE not in text:
        raise InvalidInput(f"{setting} {path}: no PEM certificate in it")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=text.decode("ascii", errors="replace"))
    except ssl.SSLError:
        raise InvalidInput(f"{setting} {path}: not a valid PEM certificate") from None


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{setting} {path}: cannot read it ({exc.strerror})") from None


def _no_passphrase(key: str) -> Callable[[], str]:
    """A passphrase callback that refuses: OpenSSL's default would prompt on the terminal."""

    def refuse() -> str:
        raise InvalidInput(
            f"tls_key {key} is encrypted with a passphrase; give an unencrypted key "
            "(readable only by the server's user)"
        )

    return refuse


def pem_identity(files: TlsFiles) -> tuple[bytes, bytes, bytes | None] | None:
    """The certificate chain, key and client CA bundle (None: no mutual TLS) as PEM bytes, for
    a server that takes its TLS files as bytes (the gRPC server); None without a certificate.
    Read after ``server_context`` has checked the files, so only a file gone since can fail."""
    if not files.cert:
        return None
    cert = _read("tls_cert", files.cert)
    key = _read("tls_key", files.key)
    client_ca = _read("tls_client_ca", files.client_ca) if files.client_ca else None
    return cert, key, client_ca
