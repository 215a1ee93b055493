"""OIDC / JWT bearer tokens: verified against a JWKS (a file, or an issuer's URL), audience,
expiry and issuer checked, the role and model scope read from configured claims.

Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA, EdDSA), each key only with the
algorithms its type allows, so ``none`` and the HS256-with-the-public-key confusion cannot pass.

Keys are fetched once when the verifier is built (start-up: a JWKS that cannot be read stops the
server with a clear message) and refreshed by a background thread every ``ttl_s`` and, when a
token names a key id the set lacks (key rotation), at most once per ``min_refetch_s``. A request
never waits on the network: a token whose key is not known yet is refused, and accepted once the
refresh has brought the key in. A refresh that fails keeps the last good keys and logs a warning.
A key removed from the JWKS (revoked) stops verifying within ``ttl_s``.

A verified token is remembered (by its SHA-256) until it expires or the key set is replaced,
whichever comes first, so the signature of a reused token is checked once, not per request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

import jwt

from dockyard.config import Settings
from dockyard.errors import InvalidInput, Unauthenticated
from dockyard.security.principals import Principal, Role

logger = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8 * 1024
"""Longer bearer tokens are refused before any parsing."""
MAX_JWKS_BYTES = 1024 * 1024
MAX_JWKS_KEYS = 100
FETCH_TIMEOUT_S = 5.0
"""A JWKS fetch gives up when a read waits this long or the body is still coming after it."""
TTL_S = 300.0
MIN_REFETCH_S = 30.0
LEEWAY_S = 30.0
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
MAX_SUBJECT_CHARS = 256
CACHE_SIZE = 4096
"""Verified tokens remembered per worker (by SHA-256), so a client reusing its token costs a hash
and a lookup, not a signature check and PyJWT's parsing (about 0.25 ms for RS256)."""
LOOPBACK_NAMES = frozenset({"localhost"})

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
ALLOWED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {"EdDSA"}


def check_jwks_url(url: str) -> None:
    """Refuse a JWKS URL that is not https, except plain http to a loopback host (a local
    identity provider or a test); keys fetched in the clear could be swapped on the way."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return
    raise InvalidInput(
        f"JWKS URL {url!r} must be https:// (plain http:// only to 127.0.0.1, ::1 or localhost)"
    )


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class VerifyingKey:
    """One public key of the set and the algorithms a token signed by it may use."""

    key: Any
    algorithms: frozenset[str]


@dataclass(frozen=True)
class KeySet:
    """The usable keys of a JWKS, by key id; ``unnamed`` holds those without one. Immutable, so
    the refresh thread swaps a whole set while requests read the old one."""

    by_id: Mapping[str, VerifyingKey] = field(default_factory=dict)
    unnamed: tuple[VerifyingKey, ...] = ()

    def __len__(self) -> int:
        return len(self.by_id) + len(self.unnamed)


@dataclass(frozen=True)
class _Verified:
    """A token already verified: its principal, until ``until`` (epoch seconds), under ``keys``."""

    principal: Principal
    until: float
    keys: KeySet


def parse_jwks(document: bytes) -> KeySet:
    """The signing keys of a JWKS document. Keys for encryption, of unknown types or with a
    symmetric or disallowed algorithm are skipped; private key material refuses the document
    (it was never meant to be published)."""
    try:
        data = json.loads(document)
    except (ValueError, RecursionError):
        raise InvalidInput("the JWKS is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise InvalidInput('the JWKS must be a JSON object with a "keys" list')
    entries = data["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise InvalidInput(f"the JWKS holds {len(entries)} keys; at most {MAX_JWKS_KEYS} are read")
    by_id: dict[str, VerifyingKey] = {}
    unnamed: list[VerifyingKey] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if any(part in entry for part in ("d", "p", "q", "k")):
            raise InvalidInput(
                "the JWKS holds private or symmetric key material; publish only public keys"
            )
        verifying = _verifying_key(entry)
        if verifying is None:
            continue
        kid = entry.get("kid")
        if isinstance(kid, str) and kid:
            by_id[kid] = verifying
        else:
            unnamed.append(verifying)
    if not by_id and not unnamed:
        raise InvalidInput("the JWKS holds no usable signing key (RSA, EC P-256/384/521 or OKP)")
    return KeySet(by_id, tuple(unnamed))


def _verifying_key(entry: dict[str, Any]) -> VerifyingKey | None:
    """The key and its algorithms, or None when the entry is not an allowed signing key."""
    if entry.get("use", "sig") != "sig":
        return None
    kty, crv = entry.get("kty"), entry.get("crv")
    if not isinstance(crv, str | None):
        return None
    if kty == "RSA":
        algorithms = RSA_ALGORITHMS
    elif kty == "EC" and crv in EC_ALGORITHMS:
        algorithms = frozenset({EC_ALGORITHMS[crv]})
    elif kty == "OKP" and crv in OKP_CURVES:
        algorithms = frozenset({"EdDSA"})
    else:
        return None
    alg = entry.get("alg")
    if alg is not None:
        if not isinstance(alg, str) or alg not in algorithms:
            return None
        algorithms = frozenset({alg})
    try:
        key = jwt.PyJWK(entry, algorithm=min(algorithms)).key
    except (jwt.PyJWTError, ValueError, TypeError):
        logger.warning("skipping a JWKS key (kid %r) that cannot be read", entry.get("kid"))
        return None
    return VerifyingKey(key, algorithms)


class _NoInsecureRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the JWKS setting itself would be allowed to be."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        check_jwks_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_jwks_url(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """The JWKS document at ``url``: at most MAX_JWKS_BYTES, given up on when a read waits
    ``timeout_s`` or the body is still arriving ``timeout_s`` after the start."""
    check_jwks_url(url)
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(_NoInsecureRedirect())
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "dockyard"}
    )
    try:
        with opener.open(request, timeout=timeout_s) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1(64 * 1024):
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise InvalidInput(f"the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise InvalidInput(f"the JWKS at {url} did not arrive within {timeout_s} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise InvalidInput(f"cannot fetch the JWKS at {url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise InvalidInput(f"cannot fetch the JWKS at {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot fetch the JWKS at {url}: {exc}") from None


def read_jwks_file(path: Path) -> bytes:
    """The JWKS document in ``path``, at most MAX_JWKS_BYTES."""
    try:
        with path.open("rb") as handle:
            document = handle.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read the JWKS file {path}: {exc.strerror}") from None
    if len(document) > MAX_JWKS_BYTES:
        raise InvalidInput(f"the JWKS file {path} is larger than {MAX_JWKS_BYTES} bytes")
    return document


class JwtVerifier:
    """Bearer JWT → principal, for one worker process (build it after forking: it runs a
    thread). Satisfies ``serving.auth.TokenVerifier``."""

    def __init__(
        self,
        jwks: str,
        audience: str,
        *,
        issuer: str = "",
        role_claim: str = "dockyard_role",
        models_claim: str = "dockyard_models",
        leeway_s: float = LEEWAY_S,
        ttl_s: float = TTL_S,
        min_refetch_s: float = MIN_REFETCH_S,
        timeout_s: float = FETCH_TIMEOUT_S,
        refresh_in_background: bool = True,
    ) -> None:
        """Load the keys now (InvalidInput when they cannot be); with
        ``refresh_in_background`` keep them fresh from a daemon thread."""
        if not audience:
            raise InvalidInput("JWT verification needs jwt_audience: the audience is checked")
        self.source = jwks
        self._is_url = "://" in jwks
        if self._is_url:
            check_jwks_url(jwks)
        self.audience = audience
        self.issuer = issuer
        self.role_claim = role_claim
        self.models_claim = models_claim
        self.leeway_s = leeway_s
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.timeout_s = timeout_s
        self._document = self._fetch()
        self._keys = self._parse(self._document)
        self._fetched_at = time.monotonic()
        self._verified: dict[bytes, _Verified] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if refresh_in_background:
            self._thread = threading.Thread(
                target=self._keep_fresh, name="dockyard-jwks", daemon=True
            )
            self._thread.start()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, refresh_in_background: bool = True
    ) -> JwtVerifier:
        """The verifier ``settings`` describe. ``refresh_in_background`` False makes a one-off
        check (before forking workers: the JWKS can be read and holds usable keys)."""
        return cls(
            settings.jwt_jwks,
            settings.jwt_audience,
            issuer=settings.jwt_issuer,
            role_claim=settings.jwt_role_claim,
            models_claim=settings.jwt_models_claim,
            refresh_in_background=refresh_in_background,
        )

    @property
    def keys(self) -> KeySet:
        return self._keys

    def _fetch(self) -> bytes:
        if self._is_url:
            return fetch_jwks_url(self.source, self.timeout_s)
        return read_jwks_file(Path(self.source).expanduser())

    def _parse(self, document: bytes) -> KeySet:
        try:
            return parse_jwks(document)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message} (from {self.source})") from None

    def refresh(self) -> None:
        """Fetch the keys again now; InvalidInput (and the old keys kept) when that fails. An
        unchanged document keeps the key set, and so the tokens verified under it."""
        self._fetched_at = time.monotonic()
        document = self._fetch()
        if document != self._document:
            self._keys = self._parse(document)
            self._document = document

    def _keep_fresh(self) -> None:
        """The refresh thread: every ``ttl_s``, or sooner when woken by an unknown key id but
        never twice within ``min_refetch_s``."""
        while not self._stop.is_set():
            woken = self._wake.wait(self.ttl_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            pause = self._fetched_at + self.min_refetch_s - time.monotonic()
            if woken and pause > 0 and self._stop.wait(pause):
                return
            try:
                self.refresh()
            except InvalidInput as exc:
                logger.warning("cannot refresh the JWKS; keeping the last keys: %s", exc)
            except Exception:  # the thread must survive anything; its keys must stay usable
                logger.exception("unexpected error refreshing the JWKS; keeping the last keys")

    def close(self) -> None:
        """Stop the refresh thread (tests; a server just exits)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)

    def principal(self, token: str) -> Principal:
        """The principal a valid token names; Unauthenticated saying what is wrong otherwise
        (never quoting the token)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"bearer token is longer than {MAX_TOKEN_BYTES} bytes")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        keys = self._keys
        known = self._verified.get(digest)
        if known is not None and known.keys is keys and time.time() <= known.until:
            return known.principal
        claims = self._verified_claims(token, keys)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("token claim 'sub' must be a non-empty string")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise Unauthenticated(f"token claim 'sub' is longer than {MAX_SUBJECT_CHARS} chars")
        # No key_id: the token's jti changes with every token an identity provider issues, and
        # rate limits and KEY_ID=RATE settings count per key id; a subject is one meter.
        principal = Principal(
            name=subject, role=self._role(claims), models=self._models(claims), kind="jwt"
        )
        self._remember(digest, _Verified(principal, float(claims["exp"]) + self.leeway_s, keys))
        return principal

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        """Keep ``verified``; when full, forget the oldest entry first."""
        self._verified.pop(digest, None)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[digest] = verified

    def _verified_claims(self, token: str, keys: KeySet) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise Unauthenticated(
                "bearer token is neither an API key nor a well-formed JWT"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            shown = (
                repr(alg)
                if isinstance(alg, str) and alg.isascii() and alg.isalnum() and len(alg) < 16
                else ""
            )
            raise Unauthenticated(
                f"token algorithm {shown or '(unsupported)'} is not allowed; "
                f"use one of {', '.join(sorted(ALLOWED_ALGORITHMS))}"
            )
        verifying = self._key_for(keys, header.get("kid"))
        if alg not in verifying.algorithms:
            raise Unauthenticated(f"token algorithm {alg} does not match its key's type")
        required = ["exp", "sub", "aud"] + (["iss"] if self.issuer else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                verifying.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer or None,
                leeway=self.leeway_s,
                options={"require": required},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_problem(exc)) from None
        except (ValueError, TypeError, RecursionError):  # older PyJWT let some of these through
            raise Unauthenticated("token is malformed") from None
        return claims

    def _key_for(self, keys: KeySet, kid: Any) -> VerifyingKey:
        if kid is None:
            if len(keys) == 1:
                return (*keys.by_id.values(), *keys.unnamed)[0]
            raise Unauthenticated(f"token has no key id (kid) and the JWKS holds {len(keys)} keys")
        if isinstance(kid, str) and kid in keys.by_id:
            return keys.by_id[kid]
        if self._thread is not None:
            self._wake.set()  # maybe a rotation: fetch the keys again, off the request path
        raise Unauthenticated("token key id (kid) is not in the JWKS; if it is new, retry shortly")

    def _role(self, claims: Mapping[str, Any]) -> Role:
        value = claims.get(self.role_claim)
        roles = ", ".join(role.value for role in Role)
        if value is None:
            raise Unauthenticated(f"token has no {self.role_claim!r} claim (a role: {roles})")
        if not isinstance(value, str):
            raise Unauthenticated(f"token claim {self.role_claim!r} must be one role: {roles}")
        try:
            return Role(value.strip().lower())
        except ValueError:
            raise Unauthenticated(
                f"token claim {self.role_claim!r} is not a role; use one of {roles}"
            ) from None

    def _models(self, claims: Mapping[str, Any]) -> frozenset[str] | None:
        """The model scope: None (every model) when the claim is absent; an empty list allows
        none."""
        if self.models_claim not in claims:
            return None
        value = claims[self.models_claim]
        if not isinstance(value, list) or not all(
            isinstance(name, str) and name.strip() for name in value
        ):
            raise Unauthenticated(
                f"token claim {self.models_claim!r} must be a list of model names"
            )
        return frozenset(name.strip() for name in value)


def _problem(error: jwt.PyJWTError) -> str:
    """What is wrong with a token, in words that quote nothing of it."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token is not valid yet (nbf)"
    if isinstance(error, jwt.InvalidIssuedAtError):
        return "token claim 'iat' is not valid"
    if isinstance(error, jwt.InvalidAudienceError):
        return "token audience (aud) is not this server's"
    if isinstance(error, jwt.InvalidIssuerError):
        return "token issuer (iss) is not the configured one"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required claim {error.claim!r}"
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature is not valid"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "token algorithm is not allowed"
    if isinstance(error, jwt.DecodeError):
        return "token is malformed"
    return "token is not valid"
