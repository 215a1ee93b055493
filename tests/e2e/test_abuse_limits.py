"""Abuse limits and security events against a real server with keys required: per-key rate limits
(429 with Retry-After; a key's own rate beats its role's; admin unlimited), the rows limit, and
the refusals as rows of the security-event table, over HTTP and through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clirun import run_cli as _cli
from dockyard.config import load_settings
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace
from servers import Server

pytestmark = pytest.mark.e2e

BURST = 20
ROLE_RATE = 5
MAX_ROWS = 10
FLUSH_WAIT_S = 5.0


def _body(rows: np.ndarray) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}


def test_rate_limits_rows_limit_and_security_events(
    served: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace = Workspace.open(load_settings({"home": served}, env={}))
    bot, bot_key = workspace.keys.create(local_user(), "bot", Role.PREDICTOR)
    fast, fast_key = workspace.keys.create(local_user(), "fast", Role.PREDICTOR, rate="100/s")
    monkeypatch.setenv("DOCKYARD_RATE_LIMITS", f"predictor={ROLE_RATE}/s")
    monkeypatch.setenv("DOCKYARD_MAX_ROWS", str(MAX_ROWS))
    server = start_server(served, "--workers", "1", auth=True)
    admin = server.admin_key
    rows = tabular_data[0]
    url = f"{server.url}/v2/models/lr/infer"

    with httpx.Client(timeout=30) as client:

        def burst(key: str) -> list[httpx.Response]:
            headers = {"Authorization": f"Bearer {key}"}
            return [client.post(url, json=_body(rows[:1]), headers=headers) for _ in range(BURST)]

        started = time.monotonic()
        answers = burst(bot_key)
        took = time.monotonic() - started
        passed = [a for a in answers if a.status_code == 200]
        limited = [a for a in answers if a.status_code == 429]
        assert len(passed) + len(limited) == BURST, [a.text for a in answers]
        # The bucket: one second's worth at once, then the rate.
        assert ROLE_RATE <= len(passed) <= ROLE_RATE * (1 + took) + 1
        assert limited
        for answer in limited:
            assert int(answer.headers["retry-after"]) >= 1
            error = answer.json()["error"]
            assert f"key {bot.key_id} is over its rate limit of {ROLE_RATE}/s" in error
            assert f"rate_limits predictor={ROLE_RATE}/s" in error
        # A key's own rate beats its role's; an admin key has no limit.
        assert all(a.status_code == 200 for a in burst(fast_key)), fast.key_id
        assert all(a.status_code == 200 for a in burst(admin))

        # The rows limit, on a key with no rate limit.
        admin_headers = {"Authorization": f"Bearer {admin}"}
        over = client.post(url, json=_body(rows[: MAX_ROWS + 1]), headers=admin_headers)
        assert over.status_code == 413
        assert over.json() == {
            "error": f"request has {MAX_ROWS + 1} rows; the limit is {MAX_ROWS} (max_rows setting)"
        }
        fits = client.post(url, json=_body(rows[:MAX_ROWS]), headers=admin_headers)
        assert fits.status_code == 200, fits.text
        assert len(fits.json()["outputs"][0]["data"]) == MAX_ROWS

        wrong = client.post(url, json=_body(rows[:1]), headers={"X-API-Key": bot_key[:-3]})
        assert wrong.status_code == 401
        # The permission check comes first: a key over its rate still learns it may not.
        forbidden = client.get(f"{server.url}/api/keys", headers={"X-API-Key": bot_key})
        assert forbidden.status_code == 403

        # Events reach the table within about a second.
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + FLUSH_WAIT_S
        while time.monotonic() < deadline:
            answer = client.get(
                f"{server.url}/api/security/events", params={"since": "1h"}, headers=admin_headers
            )
            assert answer.status_code == 200, answer.text
            events = answer.json()
            if {"auth_failed", "forbidden"} <= {event["kind"] for event in events}:
                break
            time.sleep(0.2)

    kinds = [event["kind"] for event in events]
    # A burst of alike refusals is one row with a count (per one-second batch), not a row each.
    counted = [event["count"] for event in events if event["kind"] == "rate_limited"]
    assert sum(counted) == len(limited)
    assert len(counted) < len(limited)
    assert kinds.count("auth_failed") == 1
    assert kinds.count("forbidden") == 1
    rate_limited = next(event for event in events if event["kind"] == "rate_limited")
    assert rate_limited["principal"] == "key:bot"
    assert rate_limited["key_id"] == bot.key_id
    assert (rate_limited["method"], rate_limited["status"]) == ("POST", 429)
    assert rate_limited["path"] == "/v2/models/lr/infer"
    assert rate_limited["client"].startswith("127.0.0.1:")
    forbidden_event = next(event for event in events if event["kind"] == "forbidden")
    assert (forbidden_event["path"], forbidden_event["principal"]) == ("/api/keys", "key:bot")
    text = json.dumps(events)
    for key in (bot_key, fast_key, admin):
        assert key not in text
        assert key.split("_", 2)[2][:16] not in text  # no part of the secret either

    code, out, _ = _cli(
        capsys, "security", "events", "--since", "1h", "--json", "--home", str(served)
    )
    assert code == 0
    assert [event["kind"] for event in json.loads(out)] == kinds
    code, out, _ = _cli(capsys, "security", "events", "--since", "1h", "--home", str(served))
    assert code == 0
    for kind in ("rate_limited", "auth_failed", "forbidden"):
        assert kind in out
    code, out, _ = _cli(
        capsys, "security", "events", "--limit", "1", "--json", "--home", str(served)
    )
    assert code == 0
    assert [event["kind"] for event in json.loads(out)] == [kinds[-1]]
