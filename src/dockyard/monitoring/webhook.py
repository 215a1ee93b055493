"""The alert webhook: each notification POSTed as JSON, signed with HMAC-SHA256 of the body
under ``alert_webhook_secret`` in ``X-Dockyard-Signature: sha256=<hex>``, from a thread of its own
so that a slow or dead receiver never holds up the scheduler."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import httpx

logger = logging.getLogger("dockyard.alerts")

SIGNATURE_HEADER = "X-Dockyard-Signature"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Dockyard-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 under
    ``secret``. A receiver recomputes it over the raw body and compares with
    ``hmac.compare_digest``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    """POSTs notifications to one URL from a thread of its own: ``send`` never waits. Each
    notification is tried ``attempts`` times, ``timeout_s`` each, with doubling pauses from
    ``backoff_s``; a 2xx answer delivers it; a 4xx other than 408 and 429 is final."""

    def __init__(
        self,
        url: str,
        secret: str = "",
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        queue_limit: int = 1000,
    ) -> None:
        self.url = url
        self._secret = secret
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_limit)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None
        """One client for every delivery, made at the first: making one loads the CA bundle
        (about 0.1 s), which only the process sending notifications needs."""
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        if not self._secret:
            logger.warning("alert_webhook_secret is not set: webhook notifications go unsigned")
        self._thread = threading.Thread(
            target=self._run, name="dockyard-alert-webhook", daemon=True
        )
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for delivery; when the queue is full it is dropped (and logged)."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.failed += 1
            logger.error("alert webhook queue full: dropped the %s notification", payload["alert"])

    def close(self, wait_s: float = 10.0) -> None:
        """Deliver what is queued, for at most ``wait_s``; then stop."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=wait_s)
            self._thread.join(wait_s)
            self._stopping.set()
            still_sending, self._thread = self._thread.is_alive(), None
            if still_sending:
                logger.error(
                    "alert webhook: gave up delivering %d notifications", self._queue.qsize()
                )
                return
        if self._client is not None:
            self._client.close()
            self._client = None

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            if self.deliver(payload):
                self.delivered += 1
            else:
                self.failed += 1

    def deliver(self, payload: Mapping[str, Any]) -> bool:
        """POST one notification, retrying; whether the receiver took it."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "dockyard-alerts"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        problem = ""
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout_s, follow_redirects=False)
        for attempt in range(self._attempts):
            if attempt and self._stopping.wait(self._backoff_s * 2 ** (attempt - 1)):
                break
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return True
            problem = f"answered {response.status_code}"
            if response.status_code < 500 and response.status_code not in (408, 429):
                break
        logger.error(
            "alert webhook %s: could not deliver the %s notification of %s: %s",
            self.url,
            payload["state"],
            payload["alert"],
            problem,
        )
        return False
