"""Continuous load for the chaos suite, and the tally every scenario asserts on.

Each request ends one of three ways. It *succeeded*: 200 with the model's outputs. It *failed
clearly*: an error status with a JSON body naming the error, or a connection refused or closed under
the client (a worker killed mid-request, a server restarting): the caller knows at once and can
retry. Or it was *lost*: no answer within the client's deadline, or an answer that is neither (a
200 without outputs, an error without its JSON). Lost must stay 0 in every scenario.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

CLIENT_DEADLINE_S = 15.0
"""Longer than any server-side deadline of the scenarios: past it a request counts as lost."""
RETRY_PAUSE_S = 0.05
CLEAR_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)
"""Failures the client sees at once: refused (nobody listening) or closed (the process died)."""


@dataclass
class Tally:
    """What happened to the requests of one stream of traffic."""

    sent: int = 0
    succeeded: int = 0
    failed_clearly: int = 0
    lost: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    """Each failure's kind: the HTTP status, or the transport error's class name."""
    versions: Counter[str] = field(default_factory=Counter)
    """The ``model_version`` of each success."""
    lost_examples: list[str] = field(default_factory=list)

    def row(self, scenario: str) -> tuple[str, int, int, int, int]:
        return (scenario, self.sent, self.succeeded, self.failed_clearly, self.lost)


def classify(tally: Tally, outcome: httpx.Response | Exception) -> None:
    """Count one request's outcome in ``tally``."""
    tally.sent += 1
    if isinstance(outcome, Exception):
        if isinstance(outcome, CLEAR_TRANSPORT_ERRORS):
            tally.failed_clearly += 1
            tally.kinds[type(outcome).__name__] += 1
        else:
            tally.lost += 1
            tally.lost_examples.append(repr(outcome))
        return
    body = _json(outcome)
    if outcome.status_code == 200 and isinstance(body, dict) and body.get("outputs"):
        tally.succeeded += 1
        tally.versions[str(body.get("model_version"))] += 1
    elif outcome.status_code >= 400 and isinstance(body, dict) and body.get("error"):
        tally.failed_clearly += 1
        tally.kinds[str(outcome.status_code)] += 1
    else:
        tally.lost += 1
        tally.lost_examples.append(f"{outcome.status_code}: {outcome.text[:200]}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class Traffic:
    """``clients`` threads, each with its own keep-alive connection, posting ``body`` to ``url``
    back to back (``pause_s`` between requests) until stopped."""

    def __init__(
        self, url: str, body: dict[str, Any], *, clients: int = 4, pause_s: float = 0.0
    ) -> None:
        self.url = url
        self.body = body
        self.clients = clients
        self.pause_s = pause_s
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"chaos-client-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_DEADLINE_S + 5)
        return self.tally

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        """Block until ``count`` more requests have succeeded (the traffic flows)."""
        target = self.tally.succeeded + count
        deadline = time.monotonic() + timeout_s
        while self.tally.succeeded < target:
            assert time.monotonic() < deadline, f"traffic did not flow: {self.tally}"
            time.sleep(0.02)

    def _run(self) -> None:
        with httpx.Client(timeout=CLIENT_DEADLINE_S) as client:
            while not self._stop.is_set():
                outcome: httpx.Response | Exception
                try:
                    outcome = client.post(self.url, json=self.body)
                except Exception as exc:  # every failure is counted: that is the test
                    outcome = exc
                with self._lock:
                    classify(self.tally, outcome)
                if isinstance(outcome, Exception) or outcome.status_code != 200:
                    time.sleep(RETRY_PAUSE_S)  # as a client retrying after a failure would
                elif self.pause_s:
                    time.sleep(self.pause_s)


@contextmanager
def traffic(url: str, body: dict[str, Any], **options: Any) -> Iterator[Traffic]:
    """Run ``Traffic`` for the ``with`` block; it is stopped (and its threads joined) on exit."""
    load = Traffic(url, body, **options)
    load.start()
    try:
        yield load
    finally:
        load.stop()
