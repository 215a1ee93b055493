"""Fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis) against a real server
that requires keys, with an admin key: every operation, valid and invalid requests, a bounded and
deterministic number of examples each, with generated path parameters, with ones naming what the
server has (so bodies reach the model) and with out-of-range numbers. No answer may be a 5xx, none
may take over 10 s (``max_response_time``), none may hang.

The JSON management routes read their bodies themselves, so the schema declares none: for those,
bodies come from a strategy over the fields they read (valid-looking, out-of-range and odd values).

A failure lists every request that broke a check, as a curl command to replay it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from dockyard.security.principals import Role, local_user
from dockyard.services.register import Registration, register
from homes import open_unprotected
from servers import Server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import max_response_time, not_a_server_error  # noqa: E402
from schemathesis.core.failures import Failure, FailureGroup  # noqa: E402

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 15
"""Per operation and set of path parameters; three times that for a body-less JSON route."""
HANG_S = 20.0
"""A request still unanswered after this long is a hang (``max_response_time`` fails at 10 s)."""
HUGE = str(2**64)
PATH_RUNS = (
    {"name": "lr", "model_version": "1", "version": "1"},
    {"name": "lr", "model_version": HUGE, "version": HUGE},
)
"""Path parameters besides generated ones: naming what the server has (so fuzzed bodies reach the
model), and out-of-range numbers."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_ODD_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
"""Any code points, lone surrogates and NUL included."""
_DURATION = st.from_regex(r"\A[0-9]{1,24}[smhdw]\Z")
_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,8}\Z")
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(),
    _ODD_TEXT,
    _DURATION,
    _NAME,
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ODD_TEXT, inner, max_size=3),
    max_leaves=6,
)
_FIELDS = {
    "name": _NAME,
    "role": st.sampled_from([role.value for role in Role]),
    "models": st.lists(_NAME, max_size=2),
    "expires": _DURATION,
    "rate": st.from_regex(r"\A[0-9]{1,24}(\.[0-9]{1,3})?/(s|min|hour)\Z"),
    "description": _ODD_TEXT,
    "tags": st.dictionaries(_ODD_TEXT, _ODD_TEXT, max_size=2),
    "version": st.one_of(st.integers(1, 3), st.integers(), st.floats(), st.booleans()),
    "grace": _DURATION,
}
_NEEDED = ("name", "role", "version")
"""Fields some route needs (a key's name and role, an alias's version): always there in the first
kind of body, which the other routes ignore."""
JSON_BODIES = st.one_of(
    st.fixed_dictionaries(
        {k: _FIELDS[k] for k in _NEEDED},
        optional={k: v for k, v in _FIELDS.items() if k not in _NEEDED},
    ),
    st.fixed_dictionaries({}, optional={k: st.one_of(v, _VALUE) for k, v in _FIELDS.items()}),
    _VALUE,
).map(lambda body: json.dumps(body, allow_nan=True))
"""Bodies for the routes that read JSON the schema does not describe, as text: the fields those
routes read with values of the right kind (out-of-range ones too), then with any values, then any
JSON; ``Infinity`` and ``NaN`` included, as Python's JSON parser accepts them."""


@dataclass
class Target:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Target]:
    """A server requiring keys, serving ``lr`` (30 FP64 features, alias production), and an admin
    key whose name and id no generated path can guess (so fuzzing cannot revoke or rotate it)."""
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    workspace = open_unprotected(home)
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="production"),
    )
    name = f"fuzz-{secrets.token_hex(8)}"
    _, key = workspace.keys.create(local_user(), name, Role.ADMIN)
    workspace.store.engine.dispose()
    server = Server(home, [], root / "server.log", auth=True)
    try:
        yield Target(server.url, {"Authorization": f"Bearer {key}"})
    finally:
        server.stop()


@pytest.mark.timeout(600)
def test_no_request_gets_a_server_error_or_hangs(target: Target) -> None:
    schema = schemathesis.openapi.from_url(
        f"{target.url}/openapi.json", headers=target.headers, timeout=30
    )
    failures: dict[tuple[str, str], list[str]] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = {parameter.name for parameter in operation.path_parameters}
        runs: list[dict[str, str]] = [{}]
        runs += [{k: v for k, v in fixed.items() if k in names} for fixed in PATH_RUNS if names]
        for fixed in runs:
            _fuzz(operation, fixed, target, failures, statuses)
    if os.environ.get("DOCKYARD_FUZZ_REPORT"):
        counts = sorted(statuses.items())
        print("\n".join(f"{n:4} {status} {label}" for (label, status), n in counts))
    assert operations >= 20, f"only {operations} operations in the schema"
    shown = [f"{len(seen)} x {seen[0]}" for seen in failures.values()]
    assert not failures, f"{len(failures)} kind(s) of failure:\n\n" + "\n\n".join(shown)
    # The key was accepted everywhere, and requests got through to the routes.
    assert not [label for label, status in statuses if status in (401, 403)]
    assert sum(n for (_, status), n in statuses.items() if status < 300) >= 20


def _fuzz(
    operation: Any,
    fixed: dict[str, str],
    target: Target,
    failures: dict[tuple[str, str], list[str]],
    statuses: Counter[tuple[str, int]],
) -> None:
    """Send generated requests; record each that fails a check under its operation and kind of
    failure (no shrinking: bounded)."""
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    cases = st.one_of([operation.as_strategy(mode, path_parameters=fixed) for mode in modes])
    own_body = operation.method.upper() in BODY_METHODS and not list(operation.body)
    bodies = JSON_BODIES if own_body else st.none()

    @settings(
        max_examples=MAX_EXAMPLES * (3 if own_body else 1),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, body=bodies)
    def run(case: Any, body: str | None) -> None:
        headers, extra, sent = dict(target.headers), {}, ""
        if body is not None:
            headers["Content-Type"] = "application/json"
            extra["data"] = body.encode()
            sent = f"  body: {body}\n"
        try:
            response = case.call(base_url=target.url, headers=headers, timeout=HANG_S, **extra)
        except Exception as exc:  # a hang or a dropped connection is a failure too
            failures.setdefault((operation.label, type(exc).__name__), []).append(
                f"{operation.label}: {type(exc).__name__}: {exc}\n{sent}  {_curl(case)}"
            )
            return
        statuses[operation.label, response.status_code] += 1
        try:
            case.validate_response(
                response, checks=[not_a_server_error, max_response_time], headers=headers
            )
        except (Failure, FailureGroup) as error:
            group = error.exceptions if isinstance(error, FailureGroup) else (error,)
            found = ", ".join(type(failure).__name__ for failure in group)
            answer = response.content[:300].decode("utf-8", "replace")
            failures.setdefault((operation.label, found), []).append(
                f"{operation.label}: {response.status_code} in {response.elapsed:.2f} s "
                f"({found})\n{sent}  {_curl(case)}\n  answer: {answer}"
            )

    run()


def _curl(case: Any) -> str:
    command: str = case.as_curl_command(headers={"Authorization": "Bearer $DOCKYARD_API_KEY"})
    return command


EDGES = [
    ("PUT", "/api/models/lr/aliases/staging", '{"version": Infinity}'),
    ("PUT", "/api/models/lr/aliases/staging", '{"version": 1e400}'),
    ("PUT", "/api/models/lr/aliases/staging", f'{{"version": {HUGE}}}'),
    ("PUT", "/api/models/lr/aliases/staging", '{"version": true}'),
    ("GET", f"/api/models/lr/versions/{HUGE}", None),
    ("POST", f"/api/models/lr/versions/{HUGE}/archive", None),
    ("GET", "/api/security/events?since=999999999d", None),
    ("GET", "/api/security/events?since=99999999999999999999d", None),
    ("POST", "/api/keys", '{"name": "edge", "role": "admin", "expires": "999999999999d"}'),
    ("POST", "/api/keys/edge-none/rotate", '{"grace": "99999999999999d"}'),
    ("PATCH", "/api/models/lr", '{"description": "\\ud800"}'),
    ("PATCH", "/api/models/lr", '{"tags": {"\\ud800": "b"}}'),
]
"""Requests the fuzzing found (or came near) answering 500: each must be a client error."""


@pytest.mark.parametrize(
    ("method", "path", "body"), EDGES, ids=[f"{m} {p} {b}" for m, p, b in EDGES]
)
def test_out_of_range_values_are_client_errors(
    target: Target, method: str, path: str, body: str | None
) -> None:
    headers = {**target.headers, "Content-Type": "application/json"} if body else target.headers
    response = httpx.request(
        method, f"{target.url}{path}", headers=headers, content=body, timeout=HANG_S
    )
    assert 400 <= response.status_code < 500, f"{method} {path} {body}: {response.text[:300]}"
    assert "error" in response.json()
