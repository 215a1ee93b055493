"""A real HTTP webhook receiver on a free loopback port, for the alert tests: it records every
POST (headers and raw body) and answers the statuses a test scripts (then 200)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result

    def signed_with(self, secret: str) -> bool:
        """Whether the ``X-Dockyard-Signature`` header is the HMAC-SHA256 of the raw body under
        ``secret``, checked as a receiver should (constant-time comparison)."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-dockyard-signature", ""))


class Receiver:
    """The deliveries received so far, and the statuses still to answer (then 200)."""

    def __init__(self, url: str, statuses: list[int]) -> None:
        self.url = url
        self.statuses = statuses
        self.deliveries: list[Delivery] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def wait_for(
        self, condition: Callable[[list[Delivery]], bool], timeout: float = 60.0
    ) -> list[Delivery]:
        """Wait until ``condition(deliveries)`` holds; the deliveries then."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                seen = list(self.deliveries)
            if condition(seen):
                return seen
            assert time.monotonic() < deadline, f"webhook condition not met; got {seen}"
            time.sleep(0.05)


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 until the block ends."""
    receiver: Receiver | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            assert receiver is not None
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.attempts += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    receiver.deliveries.append(Delivery(headers, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reports what it received."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", list(statuses or []))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
