"""The server's TLS context: what it accepts in a handshake, and a clear error for each bad file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from certs import Pki, issue, make_pki, new_ca, write_cert, write_key
from dockyard.config import load_settings
from dockyard.errors import InvalidInput
from dockyard.reliability.supervisor import ServerOptions, uvicorn_config
from dockyard.reliability.tls import TlsFiles, server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def files(pki: Pki, *, mutual: bool = False, **paths: Path | str) -> TlsFiles:
    given: dict[str, str] = {
        "cert": str(pki.server.cert),
        "key": str(pki.server.key),
        "client_ca": str(pki.ca) if mutual else "",
    }
    given.update({name: str(path) for name, path in paths.items()})
    return TlsFiles(**given)


def context(tls: TlsFiles) -> ssl.SSLContext:
    built = server_context(tls)
    assert built is not None
    return built


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """A TLS handshake in memory, then one message; raises the SSLError either side hits."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    pending = [client_side, server_side]
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
            server_in.write(client_out.read())
            client_in.write(server_out.read())
        if not pending:
            break
    assert not pending, "the handshake did not finish"
    client_side.write(b"ping")
    server_in.write(client_out.read())
    assert server_side.read() == b"ping"


def test_no_certificate_means_plain_http() -> None:
    assert server_context(TlsFiles()) is None
    assert ServerOptions().scheme == "http"


def test_the_context_serves_tls_1_2_and_up_without_asking_for_a_client_certificate(
    pki: Pki,
) -> None:
    server = context(files(pki))
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    assert server.options & ssl.OP_NO_RENEGOTIATION
    handshake(server, pki.client_context())
    handshake(server, pki.client_context(pki.client))


def test_mutual_tls_takes_only_client_certificates_its_ca_signed(pki: Pki) -> None:
    server = context(files(pki, mutual=True))
    assert server.verify_mode == ssl.CERT_REQUIRED
    handshake(server, pki.client_context(pki.client))
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(server, pki.client_context())
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        handshake(server, pki.client_context(pki.stranger))


def test_options_of_settings(pki: Pki, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "home": tmp_path,
            "tls_cert": str(pki.server.cert),
            "tls_key": str(pki.server.key),
            "tls_client_ca": str(pki.ca),
            "max_connections": 7,
        },
        env={},
    )
    options = ServerOptions.of(settings)
    assert options.scheme == "https"
    assert options.limits.max_connections == 7
    config = uvicorn_config(object(), "127.0.0.1", 8443, "warning", options)
    config.load()
    assert config.is_ssl
    assert config.ssl is options.tls

    plain = ServerOptions.of(load_settings({"home": tmp_path}, env={}))
    assert plain.tls is None
    assert plain.limits.max_connections == 1000


@pytest.mark.parametrize(
    ("setting", "content", "why"),
    [
        ("cert", None, "cannot read it (No such file or directory)"),
        ("cert", "dir", "cannot read it (Is a directory)"),
        ("cert", b"hello", "no PEM certificate in it"),
        (
            "cert",
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
            "not a valid PEM certificate",
        ),
        ("key", None, "cannot read it (No such file or directory)"),
        ("key", "cert", "no PEM private key in it"),
        (
            "key",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a valid PEM private key",
        ),
        ("client_ca", None, "cannot read it (No such file or directory)"),
        ("client_ca", b"", "no PEM certificate in it"),
    ],
    ids=[
        "cert-missing",
        "cert-directory",
        "cert-not-pem",
        "cert-corrupt",
        "key-missing",
        "key-is-a-cert",
        "key-corrupt",
        "ca-missing",
        "ca-empty",
    ],
)
def test_a_bad_file_is_named_with_its_cause(
    pki: Pki, tmp_path: Path, setting: str, content: bytes | str | None, why: str
) -> None:
    path = tmp_path / f"bad-{setting}.pem"
    if content == "dir":
        path.mkdir()
    elif content == "cert":
        path.write_bytes(pki.server.cert.read_bytes())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(InvalidInput) as raised:
        server_context(files(pki, mutual=True, **{setting: path}))
    assert str(raised.value).startswith(f"tls_{setting} {path}: {why}")


def test_a_key_of_another_certificate_names_both_files(pki: Pki) -> None:
    with pytest.raises(InvalidInput) as raised:
        server_context(files(pki, key=pki.client.key))
    assert str(raised.value) == (
        f"tls_key {pki.client.key} does not belong to the certificate in "
        f"tls_cert {pki.server.cert} (its first certificate must be the server's own, then the "
        "chain)"
    )


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    cert, key = issue(new_ca("CA"), "127.0.0.1", server=True)
    chain = write_cert(tmp_path / "chain.pem", cert)
    locked = write_key(tmp_path / "locked.pem", key, passphrase=b"secret")
    with pytest.raises(InvalidInput, match="encrypted with a passphrase"):
        server_context(TlsFiles(str(chain), str(locked)))
