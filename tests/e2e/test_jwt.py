"""JWT bearer tokens against a real secured server: keys generated here, the JWKS served on
loopback (and as a file); roles and model scopes from the claims, every bad token a 401, and no
token ever in the server's log or an error body."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from servers import Server

pytestmark = pytest.mark.e2e

AUDIENCE = "dockyard-e2e"
ISSUER = "https://idp.e2e.test"
INFER = "/v2/models/lr/infer"
ROW = {"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [0.1] * 30}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwks_document(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> bytes:
    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa1", "use": "sig"},
        {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1"},
    ]
    return json.dumps({"keys": keys}).encode()


class JwksServer:
    """A loopback HTTP server answering ``GET /jwks.json``, counting the fetches."""

    def __init__(self, document: bytes) -> None:
        owner = self
        self.document = document
        self.fetches = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.document)))
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Iterator[JwksServer]:
    server = JwksServer(jwks_document(rsa_key, ec_key))
    yield server
    server.close()


@pytest.fixture
def jwt_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point the servers started next at a JWKS (the test's environment is theirs)."""

    def point(jwks: str) -> None:
        monkeypatch.setenv("DOCKYARD_JWT_JWKS", jwks)
        monkeypatch.setenv("DOCKYARD_JWT_AUDIENCE", AUDIENCE)
        monkeypatch.setenv("DOCKYARD_JWT_ISSUER", ISSUER)

    return point


def token(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    role: str,
    models: list[str] | None = None,
    *,
    kid: str = "rsa1",
    alg: str = "RS256",
    expires_in: int = 300,
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": f"{role}-user",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + expires_in,
        "dockyard_role": role,
        **extra,
    }
    if models is not None:
        claims["dockyard_models"] = models
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def infer(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}{INFER}", json={"inputs": [ROW]}, headers=headers, timeout=30)


def tamper(signed: str) -> str:
    """The same header and signature over a payload that claims admin on every model."""
    header, payload, signature = signed.split(".")
    claims = jwt.decode(signed, options={"verify_signature": False})
    claims["dockyard_role"] = "admin"
    claims.pop("dockyard_models", None)
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert forged != payload
    return f"{header}.{forged}.{signature}"


def assert_never_shown(server: Server, responses: list[httpx.Response], *tokens: str) -> None:
    """No token, nor its signature, in the server's log or in any answer."""
    log = server.output()
    for shown in tokens:
        for part in (shown, shown.rsplit(".", 1)[-1]):
            assert part not in log
            for response in responses:
                assert part not in response.text


def test_jwts_from_a_jwks_url_carry_roles_and_model_scopes(
    served: Path,
    start_server: Callable[..., Server],
    jwks_server: JwksServer,
    jwt_env: Callable[[str], None],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwt_env(jwks_server.url)
    server = start_server(served, "--workers", "2", auth=True)
    assert jwks_server.fetches >= 1  # fetched at start-up, in the workers

    predictor = token(rsa_key, "predictor", ["lr"])
    churn_only = token(rsa_key, "predictor", ["churn"])
    deployer = token(ec_key, "deployer", kid="ec1", alg="ES256")
    auditor = token(rsa_key, "auditor")
    expired = token(rsa_key, "predictor", ["lr"], expires_in=-300)
    tampered = tamper(churn_only)
    wrong_audience = token(rsa_key, "predictor", ["lr"], aud="another-service")
    no_role = token(rsa_key, "", ["lr"])
    answers: list[httpx.Response] = []

    def check(response: httpx.Response, status: int, says: str = "") -> None:
        answers.append(response)
        assert response.status_code == status, response.text
        if says:
            assert says in response.json()["error"]

    for _ in range(3):  # both workers, and the remembered token on its second use
        check(infer(server, bearer(predictor)), 200)
    assert infer(server, bearer(predictor)).json()["outputs"][0]["shape"][0] == 1
    check(infer(server, bearer(churn_only)), 403, "not allowed to use model 'lr'")
    check(infer(server, bearer(auditor)), 403, "may not infer")
    check(infer(server, bearer(deployer)), 403, "may not infer")
    check(infer(server, bearer(tampered)), 401, "signature is not valid")
    check(infer(server, bearer(expired)), 401, "expired")
    check(infer(server, bearer(wrong_audience)), 401, "audience")
    check(infer(server, bearer(no_role)), 401, "dockyard_role")
    check(infer(server, bearer("not-a-jwt")), 401, "well-formed JWT")
    check(infer(server, {}), 401)

    models = httpx.get(f"{server.url}/api/models", headers=bearer(deployer))
    check(models, 200)
    assert [model["name"] for model in models.json()] == ["lr"]
    check(httpx.get(f"{server.url}/api/models", headers=bearer(tampered)), 401)
    check(httpx.get(f"{server.url}/v2/models/lr", headers=bearer(predictor)), 200)
    check(httpx.get(f"{server.url}/v2/models/lr", headers=bearer(churn_only)), 403)
    # API keys keep working beside the JWTs.
    check(httpx.get(f"{server.url}/api/models", headers=bearer(server.admin_key)), 200)

    server.stop()
    assert_never_shown(
        server, answers, predictor, churn_only, deployer, auditor, expired, tampered, no_role
    )


def test_jwts_from_a_jwks_file(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    jwt_env: Callable[[str], None],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(jwks_document(rsa_key, ec_key))
    jwt_env(str(jwks))
    server = start_server(served, "--workers", "1", auth=True)

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    predictor = token(ec_key, "predictor", ["lr"], kid="ec1", alg="ES256")
    forged = token(stranger, "admin", kid="rsa1")
    unknown_kid = token(stranger, "admin", kid="stranger")
    answers = [infer(server, bearer(predictor))]
    assert answers[-1].status_code == 200, answers[-1].text
    answers.append(infer(server, bearer(forged)))
    assert answers[-1].status_code == 401
    assert "signature is not valid" in answers[-1].json()["error"]
    answers.append(infer(server, bearer(unknown_kid)))
    assert answers[-1].status_code == 401
    assert "kid" in answers[-1].json()["error"]

    server.stop()
    assert_never_shown(server, answers, predictor, forged, unknown_kid)


def test_a_jwks_that_cannot_be_fetched_stops_the_start(
    served: Path,
    start_server: Callable[..., Server],
    jwt_env: Callable[[str], None],
    jwks_server: JwksServer,
) -> None:
    jwt_env(jwks_server.url.replace("/jwks.json", "/missing.json"))
    with pytest.raises(RuntimeError, match="HTTP 404"):
        start_server(served, "--workers", "1", auth=True)
