"""Cross-site guards: which Host values the server answers to, which Origins may change state,
and both enforced in front of the app and inside the hot path, before anything is read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.types import ASGIApp, Message

from dockyard.config import load_settings
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.app import create_app
from dockyard.serving.auth import Authenticator
from dockyard.serving.gateway import LocalGateway, build_local_gateway
from dockyard.serving.guards import HOSTS_REMEMBERED, HostPolicy, cross_site_refusal

POLICY = HostPolicy("dockyard-box", ["models.internal", "*.example.org"])


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8000",
        "10.1.2.3:80",
        "[::1]:8000",
        "[fe80::1]",
        "localhost:8000",
        "LOCALHOST",
        "dockyard-box:8000",
        "models.internal",
        "a.example.org:443",
        "a.b.example.org",
    ],
)
def test_allowed_hosts(host: str) -> None:
    assert POLICY.allows(host.encode())


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "example.org",
        "models.internal.evil",
        "[::1",
        "[::1]x",
        "::1",
        "127.0.0.1:80x",
        "",
        ":8000",
    ],
)
def test_refused_hosts(host: str) -> None:
    assert not POLICY.allows(host.encode())


def test_star_allows_any_host_and_allowed_values_are_remembered_up_to_a_bound() -> None:
    assert HostPolicy("127.0.0.1", ["*"]).allows(b"anything.example")
    policy = HostPolicy("127.0.0.1", [])
    for last in range(HOSTS_REMEMBERED + 50):
        assert policy.allows(b"10.0.%d.%d" % divmod(last, 256))
    assert len(policy.known) == HOSTS_REMEMBERED


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, None),
        ({b"origin": b"http://127.0.0.1:8000"}, None),
        ({b"origin": b"HTTP://127.0.0.1:8000"}, None),
        ({b"origin": b"http://evil.example"}, "Origin"),
        ({b"origin": b"http://127.0.0.1:9999"}, "Origin"),
        ({b"origin": b"null"}, "Origin"),
        ({b"origin": b"file://127.0.0.1:8000"}, "Origin"),
        ({b"sec-fetch-site": b"same-origin"}, None),
        ({b"sec-fetch-site": b"none"}, None),
        ({b"sec-fetch-site": b"cross-site"}, "Sec-Fetch-Site"),
        ({b"sec-fetch-site": b"same-site"}, "Sec-Fetch-Site"),
    ],
    ids=lambda value: str(value),
)
def test_cross_site_refusal(headers: dict[bytes, bytes], refused: str | None) -> None:
    raw = [(b"host", b"127.0.0.1:8000"), *headers.items()]
    refusal = cross_site_refusal(raw)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.http_status == 403
        assert refused in refusal.message


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[LocalGateway]:
    workspace = Workspace.open(load_settings({"home": tmp_path_factory.mktemp("home")}, env={}))
    register(workspace, logistic, Registration(name="lr", reference_data=tabular_data[0][:50]))
    gateway = build_local_gateway(workspace, [parse_ref("lr")])
    yield gateway
    gateway.close()


@pytest.fixture
def app(gateway: LocalGateway, tmp_path: Path) -> ASGIApp:
    settings = load_settings({"home": tmp_path, "allowed_hosts": "models.internal"}, env={})
    return create_app(settings, gateway, Authenticator(None))


async def call(app: ASGIApp, method: str, path: str, headers: dict[bytes, bytes]) -> list[Message]:
    """One request with an empty body; the messages the app sent. Reading the body fails."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers.items()),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("a refused request's body must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/lr/infer"),
        ("POST", "/v1/models/lr:predict"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/lr"),
        ("PUT", "/api/models/lr/aliases/production"),
        ("GET", "/docs"),
    ],
)
async def test_a_foreign_host_is_refused_on_every_path(
    app: ASGIApp, method: str, path: str
) -> None:
    sent = await call(app, method, path, {b"host": b"evil.example:8000"})
    assert sent[0]["status"] == 403
    assert (b"connection", b"close") in sent[0]["headers"]
    assert "Host header 'evil.example:8000'" in json.loads(sent[1]["body"])["error"]


async def test_a_configured_name_is_served(app: ASGIApp) -> None:
    sent = await call(app, "GET", "/v2/health/live", {b"host": b"models.internal:8000"})
    assert sent[0]["status"] == 200


async def test_a_foreign_origin_cannot_change_state_before_the_body_is_read(app: ASGIApp) -> None:
    headers = {b"host": b"127.0.0.1:8000", b"origin": b"http://evil.example"}
    for method, path in (("PUT", "/api/models/lr/aliases/x"), ("POST", "/api/models")):
        sent = await call(app, method, path, headers)
        assert sent[0]["status"] == 403
        assert "Origin" in json.loads(sent[1]["body"])["error"]
