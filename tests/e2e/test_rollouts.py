"""Rollouts against a real ``dockyard serve``: a canary that fails half its requests is rolled back
automatically under continuous load while the stable version's clients see no error; a shadow is
never answered with; and ``/api`` refuses what it cannot take with a 4xx naming the problem."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server

pytestmark = pytest.mark.e2e

SOURCE = """
import numpy as np


def stable(x):
    return {"score": x.sum(axis=1)}


def flaky(x):
    if (x[:, 0] % 2 == 1).any():
        raise ValueError("odd input")
    return {"score": x.sum(axis=1)}


def different(x):
    return {"score": x.sum(axis=1) + 1.0}
"""
FOLLOW_S = "0.5"
ROLLBACK_WITHIN_S = 20.0
AFTER_ROLLBACK_S = 3.0
"""Load kept on after the rollback: the workers' view of the rollouts catches up within it."""
REQUEST = re.compile(
    r'^dockyard_requests_total\{model="(\w+)",route="v2",status="(\d+)",version="(\d+)"\} (\S+)$'
)


def _body(first: int) -> dict[str, object]:
    row = [float(first), 1.0, 2.0]
    return {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": row}]}


@pytest.fixture
def served(
    home: Path, tmp_path: Path, start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> Server:
    """``m`` 1 (stable, on ``staging``), 2 (fails on odd inputs), 3 (answers 1 more), served as
    ``m@staging`` by one following worker."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SOURCE)
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    reference = 2.0 * np.random.default_rng(0).integers(0, 9, size=(20, 3))  # 2 passes them
    for entrypoint in ("stable", "flaky", "different"):
        request = Registration("m", reference_data=reference, entrypoint=f"scorer:{entrypoint}")
        register(workspace, code, request)
    workspace.store.set_alias("m", "staging", 1)
    workspace.store.close()
    monkeypatch.setenv("DOCKYARD_FOLLOW_INTERVAL_S", FOLLOW_S)
    return start_server(home, "m@staging", "--workers", "1")


class Load:
    """Requests for ``m`` (no version) one after another on a thread, each answer recorded."""

    def __init__(self, url: str) -> None:
        self.answers: list[tuple[float, int, str]] = []
        """(when, status, version answering or the error's text)."""
        self._url = f"{url}/v2/models/m/infer"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            number = 0
            while not self._stop.is_set():
                number += 1
                response = client.post(self._url, json=_body(number))
                payload = response.json()
                shown = payload.get("model_version") if response.is_success else payload["error"]
                self.answers.append((time.monotonic(), response.status_code, str(shown)))

    def stop(self) -> list[tuple[float, int, str]]:
        self._stop.set()
        self._thread.join()
        return self.answers


def _requests_by_version(server: Server) -> dict[tuple[str, str], float]:
    """``/metrics``'s V2 request counts of ``m``: (version, status) → count."""
    counts: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        found = REQUEST.match(line)
        if found and found[1] == "m":
            counts[found[3], found[2]] = float(found[4])
    return counts


def _wait_for_state(server: Server, state: str, within_s: float) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    while True:
        rollout: dict[str, object] = httpx.get(f"{server.url}/api/models/m/rollout").json()
        if rollout["state"] == state or time.monotonic() > deadline:
            return rollout
        time.sleep(0.2)


def test_a_failing_canary_is_rolled_back_and_the_stable_clients_see_no_error(
    served: Server,
) -> None:
    load = Load(served.url)
    started = httpx.post(
        f"{served.url}/api/models/m/rollouts",
        json={"version": 2, "percent": 30, "alias": "staging"},
    )
    assert started.status_code == 201, started.text

    rollout = _wait_for_state(served, "rolled_back", ROLLBACK_WITHIN_S)
    rolled_back_at = time.monotonic()
    time.sleep(AFTER_ROLLBACK_S)
    answers = load.stop()

    assert rollout["state"] == "rolled_back", rollout
    assert rollout["ended_by"] == "system:rollout"
    assert str(rollout["reason"]).startswith("error rate ")
    audit = httpx.get(f"{served.url}/api/audit", params={"model": "m"}).json()
    actions = [(entry["actor"], entry["action"]) for entry in audit]
    assert ("system:rollout", "rollout.rollback") in actions
    # The canary was live: the candidate answered some requests and failed others.
    assert any(version == "2" for _, status, version in answers if status == 200)
    failures = [(status, text) for _, status, text in answers if status != 200]
    assert failures
    # Every failure is the candidate's own (its ValueError, or its circuit opened by them),
    # never a 503 of a swap or a dropped request...
    for status, text in failures:
        assert (status, text) == (500, "pyfunc model failed to predict: ValueError") or (
            status == 503 and text.startswith("model m:2 keeps failing")
        ), text
    # ...the server counted each under the candidate, none under the stable version...
    counts = _requests_by_version(served)
    assert not [key for key in counts if key[0] == "1" and key[1] != "200"], counts
    assert sum(
        n for (version, status), n in counts.items() if version == "2" and status != "200"
    ) >= len(failures)
    # ...and once the workers saw the rollback, the stable version answered every request.
    settled = [a for a in answers if a[0] > rolled_back_at + AFTER_ROLLBACK_S / 2]
    assert settled
    assert {(status, version) for _, status, version in settled} == {(200, "1")}


def test_a_shadow_is_never_answered_with_and_its_disagreement_rolls_it_back(
    served: Server,
) -> None:
    load = Load(served.url)
    started = httpx.post(
        f"{served.url}/api/models/m/rollouts",
        json={"version": 3, "mode": "shadow", "alias": "staging"},
    )
    assert started.status_code == 201, started.text

    rollout = _wait_for_state(served, "rolled_back", ROLLBACK_WITHIN_S)
    answers = load.stop()

    assert rollout["state"] == "rolled_back", rollout
    assert str(rollout["reason"]).startswith("disagreement 1.00 > 0.1")
    assert answers
    assert {(status, version) for _, status, version in answers} == {(200, "1")}


BAD_STARTS = [
    (b"[1]", 400, "body must be a JSON object"),
    (b'{"version": "2"}', 400, "'version' must be a whole number"),
    (b'{"version": true, "percent": 5}', 400, "'version' must be a whole number"),
    (b'{"version": 2, "percent": 5.5}', 400, "'percent' must be a whole number"),
    (b'{"version": 2, "percent": 5, "colour": 1}', 400, "unknown field 'colour'"),
    (b'{"version": 2, "percent": 500, "alias": "staging"}', 400, "1 to 99"),
    (b'{"version": 2, "mode": 7}', 400, "'mode' must be a string"),
    (b'{"version": 99999999999999999999, "percent": 5, "alias": "staging"}', 404, "no version"),
    (b'{"version": 2, "percent": 5}', 404, "no alias 'production'"),
]


def test_the_api_refuses_bad_starts_by_name_then_starts_shows_and_aborts(
    served: Server,
) -> None:
    api = f"{served.url}/api/models/m"
    for body, status, message in BAD_STARTS:
        response = httpx.post(
            f"{api}/rollouts", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], body
    assert httpx.get(f"{api}/rollout").status_code == 404
    assert httpx.post(f"{api}/rollout/abort").status_code == 404

    start = {"version": 3, "percent": 10, "sticky": "user", "alias": "staging"}
    assert httpx.post(f"{api}/rollouts", json=start).status_code == 201
    again = httpx.post(f"{api}/rollouts", json=start)
    aborted = httpx.post(f"{api}/rollout/abort", json={"comment": "not today"})

    assert again.status_code == 409
    assert "promote or abort it first" in again.json()["error"]
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "aborted"
    assert aborted.json()["reason"] == "not today"
    assert httpx.get(f"{api}/rollout").json()["state"] == "aborted"
