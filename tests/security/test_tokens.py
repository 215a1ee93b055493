"""JWT bearer tokens: keys generated here, a JWKS as a file (and on loopback for the fetch limits);
every way a token can be wrong is refused with its own message, none quoting the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from dockyard.config import load_settings
from dockyard.errors import InvalidInput, Unauthenticated
from dockyard.security import tokens
from dockyard.security.principals import Role
from dockyard.security.tokens import (
    MAX_JWKS_BYTES,
    MAX_TOKEN_BYTES,
    JwtVerifier,
    check_jwks_url,
    fetch_jwks_url,
    parse_jwks,
)
from dockyard.services.workspace import Workspace
from dockyard.serving.auth import Authenticator, authenticator_for

AUDIENCE = "dockyard-test"
ISSUER = "https://issuer.test"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(key: PrivateKey, kid: str | None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        text = RSAAlgorithm.to_jwk(key.public_key())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        text = ECAlgorithm.to_jwk(key.public_key())
    else:
        text = OKPAlgorithm.to_jwk(key.public_key())
    entry: dict[str, Any] = json.loads(text)
    if kid is not None:
        entry["kid"] = kid
    return entry


def write_jwks(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(entries)}), encoding="utf-8")
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "jti": "token-1",
        "dockyard_role": "predictor",
        "dockyard_models": ["lr"],
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(
    key: PrivateKey, payload: dict[str, Any], alg: str = "RS256", kid: str | None = "rsa1"
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


@pytest.fixture
def jwks_file(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> Path:
    return write_jwks(
        tmp_path / "jwks.json",
        public_jwk(rsa_key, "rsa1"),
        public_jwk(ec_key, "ec1"),
        public_jwk(ed_key, "ed1"),
    )


@pytest.fixture
def make_verifier() -> Iterator[Callable[..., JwtVerifier]]:
    made: list[JwtVerifier] = []

    def make(jwks: Path | str, **options: Any) -> JwtVerifier:
        options.setdefault("issuer", ISSUER)
        options.setdefault("refresh_in_background", False)
        verifier = JwtVerifier(str(jwks), AUDIENCE, **options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


@pytest.fixture
def verifier(jwks_file: Path, make_verifier: Callable[..., JwtVerifier]) -> JwtVerifier:
    return make_verifier(jwks_file)


def refused(verifier: JwtVerifier, token: str) -> str:
    """The refusal's message, checked not to quote the token or its parts."""
    with pytest.raises(Unauthenticated) as caught:
        verifier.principal(token)
    message = caught.value.message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in message
    return message


def test_a_valid_rsa_token_names_its_subject_role_and_models(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    principal = verifier.principal(sign(rsa_key, claims(dockyard_models=["lr", "churn"])))
    assert principal.name == "alice"
    assert principal.role is Role.PREDICTOR
    assert principal.models == frozenset({"lr", "churn"})
    assert principal.kind == "jwt"
    assert principal.key_id == ""  # one rate meter per subject, not per token (jti)
    assert principal.actor == "jwt:alice"


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS512"])
def test_an_rsa_key_without_alg_verifies_every_rsa_algorithm(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, alg: str
) -> None:
    assert verifier.principal(sign(rsa_key, claims(), alg=alg)).name == "alice"


def test_ec_and_eddsa_tokens_verify_and_no_models_claim_means_every_model(
    verifier: JwtVerifier,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    deployer = verifier.principal(
        sign(ec_key, claims(dockyard_role="Deployer", dockyard_models=None), "ES256", "ec1")
    )
    assert deployer.role is Role.DEPLOYER
    assert deployer.models is None
    auditor = verifier.principal(sign(ed_key, claims(dockyard_role="auditor"), "EdDSA", "ed1"))
    assert auditor.role is Role.AUDITOR


def test_an_empty_models_list_allows_no_model(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    principal = verifier.principal(sign(rsa_key, claims(dockyard_models=[])))
    assert principal.models == frozenset()
    assert not principal.sees("lr")


def test_claim_names_are_configurable(
    jwks_file: Path, make_verifier: Callable[..., JwtVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(jwks_file, role_claim="role", models_claim="models")
    token = sign(rsa_key, claims(role="admin", models=["fraud"], dockyard_role="predictor"))
    principal = verifier.principal(token)
    assert principal.role is Role.ADMIN
    assert principal.models == frozenset({"fraud"})


def test_expiry_is_checked_with_a_small_leeway(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    assert verifier.principal(sign(rsa_key, claims(exp=now - 10))).name == "alice"
    assert refused(verifier, sign(rsa_key, claims(exp=now - 120))) == "token has expired"


def test_a_token_not_valid_yet_is_refused(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, claims(nbf=int(time.time()) + 600))
    assert "not valid yet" in refused(verifier, token)


def test_wrong_audience_and_issuer_are_refused(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert "audience" in refused(verifier, sign(rsa_key, claims(aud="another-service")))
    assert "issuer" in refused(verifier, sign(rsa_key, claims(iss="https://evil.test")))


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss"])
def test_required_claims_are_required(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, claim: str
) -> None:
    message = refused(verifier, sign(rsa_key, claims(**{claim: None})))
    assert message == f"token lacks the required claim {claim!r}"


def test_iss_is_not_required_without_a_configured_issuer(
    jwks_file: Path, make_verifier: Callable[..., JwtVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(jwks_file, issuer="")
    assert verifier.principal(sign(rsa_key, claims(iss=None))).name == "alice"


def test_a_tampered_payload_is_refused(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(rsa_key, claims()).split(".")
    forged = b64(json.dumps(claims(dockyard_role="admin", dockyard_models=None)).encode())
    assert refused(verifier, f"{header}.{forged}.{signature}") == "token signature is not valid"


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
    verifier: JwtVerifier, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(other_rsa_key, claims(), kid="rsa1")
    assert refused(verifier, token) == "token signature is not valid"


def test_alg_none_is_refused(verifier: JwtVerifier) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "rsa1"}, claims()) + "."
    assert "algorithm 'none' is not allowed" in refused(verifier, token)


def test_hs256_with_the_public_key_as_secret_is_refused(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: an HMAC keyed with the (public) verification key."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, json.dumps(public_jwk(rsa_key, "rsa1")).encode()):
        signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims())
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert "algorithm 'HS256' is not allowed" in refused(
            verifier, f"{signing_input}.{b64(mac)}"
        )


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    verifier: JwtVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec_key, claims(), alg="ES256", kid="rsa1")
    assert "does not match its key's type" in refused(verifier, token)


def test_an_unknown_kid_is_refused(verifier: JwtVerifier, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(other_rsa_key, claims(), kid="rotated")
    assert "key id (kid) is not in the JWKS" in refused(verifier, token)


def test_a_token_without_kid_needs_a_single_key_jwks(
    tmp_path: Path,
    verifier: JwtVerifier,
    make_verifier: Callable[..., JwtVerifier],
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    token = sign(rsa_key, claims(), kid=None)
    assert "no key id (kid)" in refused(verifier, token)
    single = make_verifier(write_jwks(tmp_path / "one.json", public_jwk(rsa_key, None)))
    assert single.principal(token).name == "alice"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "token has no 'dockyard_role' claim"),
        ("superuser", "token claim 'dockyard_role' is not a role"),
        (["predictor", "admin"], "token claim 'dockyard_role' must be one role"),
        (7, "token claim 'dockyard_role' must be one role"),
    ],
)
def test_a_missing_or_unknown_role_is_refused(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, value: Any, expected: str
) -> None:
    assert refused(verifier, sign(rsa_key, claims(dockyard_role=value))).startswith(expected)


@pytest.mark.parametrize("value", ["lr", ["lr", 3], ["lr", " "], {"lr": True}])
def test_a_malformed_models_claim_is_refused(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, value: Any
) -> None:
    message = refused(verifier, sign(rsa_key, claims(dockyard_models=value)))
    assert message == "token claim 'dockyard_models' must be a list of model names"


def test_an_empty_subject_is_refused(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert "'sub'" in refused(verifier, sign(rsa_key, claims(sub=" ")))


def test_an_oversize_token_is_refused_before_parsing(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, claims(padding="x" * MAX_TOKEN_BYTES))
    assert refused(verifier, token) == f"bearer token is longer than {MAX_TOKEN_BYTES} bytes"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "...."])
def test_malformed_tokens_are_refused(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(Unauthenticated, match="well-formed JWT|malformed|algorithm|kid"):
        verifier.principal(token)


def test_a_garbled_signature_is_refused(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, payload, _ = sign(rsa_key, claims()).split(".")
    assert refused(verifier, f"{header}.{payload}.AAAA") == "token signature is not valid"


def test_keys_removed_from_a_file_stop_verifying_and_new_ones_verify_after_refresh(
    jwks_file: Path,
    make_verifier: Callable[..., JwtVerifier],
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = make_verifier(jwks_file)
    old, new = sign(rsa_key, claims()), sign(other_rsa_key, claims(), kid="rsa2")
    assert verifier.principal(old).name == "alice"
    write_jwks(jwks_file, public_jwk(other_rsa_key, "rsa2"))
    verifier.refresh()
    assert "not in the JWKS" in refused(verifier, old)
    assert verifier.principal(new).name == "alice"


def test_an_unchanged_jwks_keeps_the_verified_tokens(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    keys = verifier.keys
    principal = verifier.principal(sign(rsa_key, claims()))
    verifier.refresh()
    assert verifier.keys is keys
    assert verifier.principal(sign(rsa_key, claims())) == principal


def test_an_unknown_kid_wakes_the_refresh_thread(
    jwks_file: Path,
    make_verifier: Callable[..., JwtVerifier],
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = make_verifier(jwks_file, refresh_in_background=True, min_refetch_s=0.0)
    token = sign(other_rsa_key, claims(), kid="rotated")
    refused(verifier, token)  # not known yet: refused at once, no fetch on the request path
    write_jwks(jwks_file, public_jwk(other_rsa_key, "rotated"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert verifier.principal(token).name == "alice"
            return
        except Unauthenticated:
            time.sleep(0.05)
    pytest.fail("the rotated key was not fetched")


def test_a_failed_refresh_keeps_the_last_keys(
    jwks_file: Path, make_verifier: Callable[..., JwtVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(jwks_file)
    jwks_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        verifier.refresh()
    assert verifier.principal(sign(rsa_key, claims())).name == "alice"


def test_the_unknown_kid_refetch_is_rate_limited(
    jwks_file: Path,
    make_verifier: Callable[..., JwtVerifier],
    other_rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forged key ids cannot make a server hammer its identity provider."""
    verifier = make_verifier(jwks_file, refresh_in_background=True, min_refetch_s=1.0)
    loads: list[float] = []
    original = verifier._fetch

    def counted() -> bytes:
        loads.append(time.monotonic())
        return original()

    monkeypatch.setattr(verifier, "_fetch", counted)
    for index in range(20):
        refused(verifier, sign(other_rsa_key, claims(), kid=f"forged-{index}"))
    time.sleep(0.5)
    assert loads == []  # fetched at start-up just now: the next fetch waits min_refetch_s
    time.sleep(1.0)
    assert len(loads) == 1


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}], "private or symmetric"),
        ([{"kty": "oct", "k": "c2VjcmV0"}], "private or symmetric"),
        ([{"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}], "no usable signing key"),
        ([], "no usable signing key"),
    ],
)
def test_a_jwks_without_usable_public_keys_is_refused(
    entries: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_jwks(json.dumps({"keys": entries}).encode())


def test_jwks_keys_for_encryption_or_with_symmetric_alg_are_skipped(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    keys = parse_jwks(
        json.dumps(
            {
                "keys": [
                    {**public_jwk(rsa_key, "enc"), "use": "enc"},
                    {**public_jwk(rsa_key, "hs"), "alg": "HS256"},
                    {**public_jwk(rsa_key, "ps"), "alg": "PS384"},
                    public_jwk(ec_key, "ec"),
                    "not a key",
                ]
            }
        ).encode()
    )
    assert set(keys.by_id) == {"ps", "ec"}
    assert keys.by_id["ps"].algorithms == frozenset({"PS384"})
    assert keys.by_id["ec"].algorithms == frozenset({"ES256"})


@pytest.mark.parametrize("document", [b"[]", b'{"keys": {}}', b"\xff", b"{"])
def test_a_malformed_jwks_is_refused(document: bytes) -> None:
    with pytest.raises(InvalidInput, match="JWKS"):
        parse_jwks(document)


def test_start_up_refuses_a_missing_file_a_big_file_or_no_audience(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the JWKS file"):
        JwtVerifier(str(tmp_path / "missing.json"), AUDIENCE, refresh_in_background=False)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_JWKS_BYTES + 1))
    with pytest.raises(InvalidInput, match="larger than"):
        JwtVerifier(str(big), AUDIENCE, refresh_in_background=False)
    with pytest.raises(InvalidInput, match="jwt_audience"):
        JwtVerifier(str(big), "", refresh_in_background=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/jwks.json",
        "http://10.0.0.1/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "https:///jwks.json",
    ],
)
def test_jwks_urls_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(InvalidInput, match="must be https://"):
        check_jwks_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_https_and_loopback_http_jwks_urls_are_accepted(url: str) -> None:
    check_jwks_url(url)


def test_settings_require_an_audience_with_a_jwks() -> None:
    with pytest.raises(InvalidInput, match="jwt_audience"):
        load_settings({"jwt_jwks": "/etc/jwks.json"}, env={})
    with pytest.raises(InvalidInput, match="file path or an https:// URL"):
        load_settings({"jwt_jwks": "ftp://idp/jwks", "jwt_audience": "a"}, env={})
    load_settings({"jwt_jwks": "https://idp/jwks", "jwt_audience": "a"}, env={})


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    delay_s = 0.0
    redirect = ""

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path != "/jwks.json":
            self.send_error(404)
            return
        if self.redirect:
            self.send_response(302)
            self.send_header("Location", self.redirect)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        time.sleep(self.delay_s)
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def serve_jwks() -> Iterator[Callable[..., str]]:
    """Factory: a loopback HTTP server answering every GET as told; returns its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(body: bytes = b"", delay_s: float = 0.0, redirect: str = "") -> str:
        handler = type(
            "Handler", (_Handler,), {"body": body, "delay_s": delay_s, "redirect": redirect}
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_jwks_url_on_loopback_is_fetched(
    serve_jwks: Callable[..., str],
    make_verifier: Callable[..., JwtVerifier],
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    url = serve_jwks(json.dumps({"keys": [public_jwk(rsa_key, "rsa1")]}).encode())
    verifier = make_verifier(url)
    assert verifier.principal(sign(rsa_key, claims())).name == "alice"


def test_jwks_fetches_are_bounded_in_size_time_and_redirects(
    serve_jwks: Callable[..., str],
) -> None:
    with pytest.raises(InvalidInput, match="larger than"):
        fetch_jwks_url(serve_jwks(b" " * (MAX_JWKS_BYTES + 10)))
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="cannot fetch|did not arrive"):
        fetch_jwks_url(serve_jwks(b"{}", delay_s=3.0), timeout_s=0.5)
    assert time.monotonic() - started < 2.5
    with pytest.raises(InvalidInput, match="must be https://"):
        fetch_jwks_url(serve_jwks(redirect="http://idp.example.com/jwks.json"))
    with pytest.raises(InvalidInput, match="HTTP 404"):
        fetch_jwks_url(serve_jwks(redirect="/missing"))


def test_the_authenticator_sends_non_api_key_bearers_to_the_verifier(
    home: Path, jwks_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = load_settings(
        {"home": home, "jwt_jwks": str(jwks_file), "jwt_audience": AUDIENCE}, env={}
    )
    auth = authenticator_for(settings, Workspace.open(settings))
    assert isinstance(auth, Authenticator)
    principal = auth.principal(sign(rsa_key, claims(iss=None)))
    assert (principal.kind, principal.name) == ("jwt", "alice")
    with pytest.raises(Unauthenticated, match="invalid API key"):
        auth.principal("dk_0123456789ab_notarealkey")
    auth._tokens.close()  # type: ignore[union-attr]


def test_a_remembered_token_still_expires(
    jwks_file: Path, make_verifier: Callable[..., JwtVerifier], rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(jwks_file, leeway_s=0.0)
    expires = int(time.time()) + 2
    token = sign(rsa_key, claims(exp=expires))
    assert verifier.principal(token) is verifier.principal(token)  # the second from memory
    time.sleep(expires + 0.1 - time.time())
    assert refused(verifier, token) == "token has expired"


def test_remembered_tokens_are_bounded(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "CACHE_SIZE", 3)
    signed = [sign(rsa_key, claims(sub=f"user{index}")) for index in range(5)]
    for token in signed:
        verifier.principal(token)
    assert len(verifier._verified) == 3
    assert [verifier.principal(token).name for token in signed] == [f"user{i}" for i in range(5)]


@pytest.mark.parametrize(
    "header",
    [
        {"alg": ["RS256"], "kid": "rsa1"},
        {"alg": {"RS256": 1}, "kid": "rsa1"},
        {"alg": "RS256", "kid": ["rsa1"]},
        {"alg": "RS256", "kid": 7},
        {"alg": "ＲＳ256", "kid": "rsa1"},
    ],
)
def test_odd_header_values_are_refused_not_crashed_on(
    verifier: JwtVerifier, header: dict[str, Any]
) -> None:
    refused(verifier, unsigned(header, claims()) + ".AAAA")


def test_a_deeply_nested_header_is_refused(verifier: JwtVerifier) -> None:
    token = f"{b64(b'[' * 5000)}.{b64(b'{}')}.AAAA"
    assert "well-formed JWT" in refused(verifier, token)


def test_odd_jwks_entries_are_skipped(rsa_key: rsa.RSAPrivateKey) -> None:
    good = public_jwk(rsa_key, "good")
    odd = [
        {**good, "kid": "a", "alg": ["RS256"]},
        {**good, "kid": "b", "crv": ["P-256"]},
        {"kty": ["RSA"], "kid": "c"},
        {"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad", "kid": "d"},
    ]
    assert set(parse_jwks(json.dumps({"keys": [*odd, good]}).encode()).by_id) == {"good"}
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_jwks(b"[" * 100_000)
