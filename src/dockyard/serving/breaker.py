"""A circuit breaker per served version: a version that keeps failing is left alone for a while.

Closed: every request reaches the model; ``failures`` failed predictions in a row (the model raised,
crashed or ran past its deadline — never a client's bad input) open it. Open: requests are refused
at once (``CircuitOpen``, 503 with ``Retry-After`` the time left) or answered by a fallback version,
without calling the model. After ``reset_s`` one trial request passes (half-open): its success
closes the circuit, its failure opens it for another ``reset_s``. The state is per worker process:
each worker's breaker counts the failures it sees. Everything runs on the worker's event loop, so
nothing is locked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import IntEnum

from dockyard.errors import CircuitOpen

logger = logging.getLogger(__name__)


class Ticket(IntEnum):
    """What ``Breaker.admit`` let a request do; handed back with the request's outcome."""

    REFUSED = 0
    ADMITTED = 1
    TRIAL = 2
    """The one request let through a half-open circuit: its outcome decides the circuit."""


class Breaker:
    """Counts a version's failures in a row and opens, half-opens and closes its circuit."""

    def __init__(
        self,
        name: str,
        *,
        failures: int,
        reset_s: float,
        while_open: str = "requests get 503",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``failures``: failures in a row that open the circuit (0: it never opens);
        ``while_open`` says in the log what happens to requests meanwhile."""
        self._name = name
        self._limit = failures
        self._reset_s = reset_s
        self._clock = clock
        self.while_open = while_open
        self._failures = 0
        self._retry_at: float | None = None
        """While open: when the next trial may pass; None while closed."""
        self._trial = False
        """Whether the trial request is on its way."""
        self.opened = 0
        """How many times the circuit opened (counted for tests)."""

    @property
    def is_open(self) -> bool:
        """Whether the circuit is open or half-open (a metric's gauge)."""
        return self._retry_at is not None

    def blocks(self) -> bool:
        """Whether a request arriving now would be refused (open, and no trial due)."""
        retry_at = self._retry_at
        return retry_at is not None and (self._trial or self._clock() < retry_at)

    def admit(self) -> Ticket:
        """Let a request reach the model, or not; the first request after ``reset_s`` is the
        circuit's trial."""
        if self._retry_at is None:
            return Ticket.ADMITTED
        if self.blocks():
            return Ticket.REFUSED
        self._trial = True
        return Ticket.TRIAL

    def refusal(self) -> CircuitOpen:
        """The answer to a request refused while the circuit is open."""
        left = max(0.0, (self._retry_at or 0.0) - self._clock())
        return CircuitOpen(
            f"model {self._name} keeps failing: its circuit is open (after {self._limit} failed "
            f"predictions in a row) and one request tries it again in {left:.0f} s",
            retry_after=left,
        )

    def succeeded(self, ticket: Ticket) -> None:
        """A prediction answered: a trial closes the circuit; any success resets the count."""
        if ticket is Ticket.TRIAL:
            self._trial = False
            self._retry_at = None
            logger.warning("%s: a trial request succeeded; its circuit is closed", self._name)
        if self._retry_at is None:
            self._failures = 0

    def failed(self, ticket: Ticket) -> None:
        """A prediction failed: a trial re-opens the circuit; ``failures`` in a row open it."""
        if ticket is Ticket.TRIAL:
            self._trial = False
            self._open("its trial request failed")
        elif self._retry_at is None:
            self._failures += 1
            if self._failures == self._limit:
                self._open(f"{self._failures} predictions failed in a row")

    def released(self, ticket: Ticket) -> None:
        """A request ended without a verdict on the model (a client error, a shed request, a
        client gone): a trial's place goes to the next request."""
        if ticket is Ticket.TRIAL:
            self._trial = False

    def _open(self, why: str) -> None:
        self._retry_at = self._clock() + self._reset_s
        self.opened += 1
        logger.warning(
            "%s: %s; its circuit is open for %g s (%s)",
            self._name,
            why,
            self._reset_s,
            self.while_open,
        )
