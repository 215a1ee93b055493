"""Per-key rate limits (token buckets) and the detector of keys whose request rate jumps.

One ``RateLimits`` per worker, on its event loop only: plain floats in a dict, no lock. A request
pays one dict lookup and an integer increment; a limited key also one clock read and a few float
operations. Its rate is the key's own (``dockyard keys create --rate``), else the ``rate_limits``
entry for its id, else the entry for its role, else none. Limits are per worker: a server of N
workers lets a key through up to N times its rate when its connections spread over them.

The anomaly detector counts each principal's requests in windows of ``WINDOW_S``; ``roll``, called
about every second by the server's background task (never per request), closes a window, compares
each count with the principal's own moving-average baseline and returns one ``rate_anomaly``
event for a jump (at most one per principal per ``COOLDOWN_S``). It never refuses a request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from dockyard.errors import InvalidInput, RateLimited
from dockyard.security.apikeys import ID_BYTES, KeyRecord
from dockyard.security.events import RATE_ANOMALY, SecurityEvent
from dockyard.security.keystore import parse_rate
from dockyard.security.principals import Principal, Role

KEY_ID = re.compile(rf"^[0-9a-f]{{{2 * ID_BYTES}}}$")
ROLES = frozenset(role.value for role in Role)

WINDOW_S = 10.0
"""Length of one counting window of the anomaly detector."""
WARMUP_WINDOWS = 3
"""Windows a principal must have been seen for before its rate is judged (its baseline forms)."""
FACTOR = 10.0
"""A window is a jump when its rate is over this many times the principal's baseline …"""
FLOOR_PER_S = 5.0
"""… and over this rate (50 requests in a 10 s window): a quiet key going to a few requests a
second is not worth an event."""
SMOOTHING = 0.2
"""Weight of the newest window in the baseline (exponential moving average of window rates)."""
COOLDOWN_S = 300.0
"""At most one anomaly event per principal this often."""


@dataclass(frozen=True)
class Limit:
    """A rate and where it comes from, for the 429's message."""

    per_s: float
    text: str
    source: str


class _Meter:
    """One principal's bucket and request count (not a dataclass: ``admit`` reads its fields on
    every request, and slots make that a plain attribute load)."""

    __slots__ = (
        "actor",
        "baseline",
        "capacity",
        "count",
        "key_id",
        "last",
        "limit",
        "quiet_until",
        "rate",
        "role",
        "tokens",
        "windows",
    )

    def __init__(self, principal: Principal, limit: Limit | None, now: float) -> None:
        self.actor = principal.actor
        self.key_id = principal.key_id
        self.role = principal.role
        self.count = 0
        self.windows = 0
        self.baseline = 0.0
        self.quiet_until = 0.0
        self.last = now
        self.rate = 0.0
        self.capacity = 0.0
        self.tokens = 0.0
        self.limit: Limit | None = None
        self.set_limit(limit)

    def set_limit(self, limit: Limit | None) -> None:
        """Use ``limit`` (None: unlimited); a new limit starts with a full bucket."""
        if limit == self.limit:
            return
        self.limit = limit
        self.rate = limit.per_s if limit is not None else 0.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity


def parse_limits(entries: Iterable[str]) -> tuple[dict[Role, Limit], dict[str, Limit]]:
    """The ``rate_limits`` setting (``ROLE=RATE`` or ``KEY_ID=RATE``) as limits by role and by
    key id; InvalidInput naming the first bad entry."""
    roles: dict[Role, Limit] = {}
    keys: dict[str, Limit] = {}
    for entry in entries:
        target, sep, rate = (part.strip() for part in entry.partition("="))
        role = target.lower()
        if not sep or not (role in ROLES or KEY_ID.match(target)):
            raise InvalidInput(
                f"rate_limits entry {entry!r} must look like ROLE=RATE or KEY_ID=RATE "
                f"(roles: {', '.join(sorted(ROLES))}; a key id is {2 * ID_BYTES} hex digits, "
                "as dockyard keys list shows; RATE like 100/s or 6000/min)"
            )
        try:
            limit = Limit(parse_rate(rate), rate, f"rate_limits {target}={rate}")
        except InvalidInput as exc:
            raise InvalidInput(f"rate_limits entry {entry!r}: {exc.message}") from None
        if role in ROLES:
            roles[Role(role)] = limit
        else:
            keys[target] = limit
    return roles, keys


class RateLimits:
    """Token buckets per principal, and the anomaly detector's counts, for one worker."""

    def __init__(
        self,
        roles: Mapping[Role, Limit] | None = None,
        keys: Mapping[str, Limit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._roles = dict(roles or {})
        self._configured = dict(keys or {})
        self._own: dict[str, Limit] = {}
        """Limits keys carry themselves (``KeyRecord.rate``), by key id; set by ``update``."""
        self._own_rates: dict[str, str] = {}
        self._clock = clock
        self._meters: dict[str, _Meter] = {}
        """By key id, for API keys."""
        self._named: dict[str, _Meter] = {}
        """By name, for principals without a key id (JWT subjects)."""
        self._window_start = clock()

    @classmethod
    def from_settings(
        cls,
        entries: Iterable[str],
        records: Iterable[KeyRecord] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> RateLimits:
        """Limits from the ``rate_limits`` setting and the keys' own rates."""
        limits = cls(*parse_limits(entries), clock=clock)
        limits.update(records)
        return limits

    def admit(self, principal: Principal) -> None:
        """Count the request; raise RateLimited when ``principal`` is over its rate."""
        key_id = principal.key_id
        meter = self._meters.get(key_id) if key_id else self._named.get(principal.name)
        if meter is None:
            meter = self._meter(principal)
        meter.count += 1
        rate = meter.rate
        if not rate:
            return
        now = self._clock()
        tokens = meter.tokens + (now - meter.last) * rate
        if tokens > meter.capacity:
            tokens = meter.capacity
        meter.last = now
        if tokens >= 1.0:
            meter.tokens = tokens - 1.0
            return
        meter.tokens = tokens
        raise self._refusal(meter, (1.0 - tokens) / rate)

    def update(self, records: Iterable[KeyRecord]) -> None:
        """Take the keys' own rates (after the keys are reloaded); a meter whose limit changed
        starts again with a full bucket."""
        rates = {record.key_id: record.rate for record in records if record.rate}
        if rates == self._own_rates:
            return  # the usual reload: nothing to parse
        self._own_rates = rates
        self._own = {
            key_id: Limit(parse_rate(rate), rate, f"key {key_id}'s own rate")
            for key_id, rate in rates.items()
        }
        for meter in self._every_meter():
            meter.set_limit(self._limit(meter.key_id, meter.role))

    def roll(self, now: float | None = None) -> list[SecurityEvent]:
        """Close the counting window when ``WINDOW_S`` has passed: one ``rate_anomaly`` event per
        principal whose rate jumped (see the module's doc), and the baselines updated."""
        now = self._clock() if now is None else now
        elapsed = now - self._window_start
        if elapsed < WINDOW_S:
            return []
        self._window_start = now
        events: list[SecurityEvent] = []
        for meter in self._every_meter():
            rate = meter.count / elapsed
            meter.count = 0
            if (
                meter.windows >= WARMUP_WINDOWS
                and rate > FLOOR_PER_S
                and rate > FACTOR * meter.baseline
                and now >= meter.quiet_until
            ):
                meter.quiet_until = now + COOLDOWN_S
                events.append(_anomaly(meter, rate, elapsed))
            meter.baseline = (
                rate if meter.windows == 0 else meter.baseline + SMOOTHING * (rate - meter.baseline)
            )
            meter.windows += 1
        return events

    def limit_of(self, principal: Principal) -> Limit | None:
        """The limit ``principal`` is held to; None: unlimited."""
        return self._limit(principal.key_id, principal.role)

    def _limit(self, key_id: str, role: Role) -> Limit | None:
        if key_id:
            limit = self._own.get(key_id) or self._configured.get(key_id)
            if limit is not None:
                return limit
        return self._roles.get(role)

    def _meter(self, principal: Principal) -> _Meter:
        meter = _Meter(principal, self.limit_of(principal), self._clock())
        if principal.key_id:
            self._meters[principal.key_id] = meter
        else:
            self._named[principal.name] = meter
        return meter

    def _every_meter(self) -> Iterator[_Meter]:
        yield from self._meters.values()
        yield from self._named.values()

    @staticmethod
    def _refusal(meter: _Meter, retry_after: float) -> RateLimited:
        limit = meter.limit
        assert limit is not None
        who = f"key {meter.key_id}" if meter.key_id else meter.actor
        return RateLimited(
            f"{who} is over its rate limit of {limit.text} ({limit.source}); "
            f"retry in {retry_after:.2f} s",
            retry_after,
        )


def _anomaly(meter: _Meter, rate: float, elapsed: float) -> SecurityEvent:
    return SecurityEvent(
        kind=RATE_ANOMALY,
        principal=meter.actor,
        key_id=meter.key_id,
        method="",
        path="",
        status=0,
        client="",
        detail=(
            f"{rate:.1f} requests/s over the last {elapsed:.0f} s, more than {FACTOR:g}x its "
            f"baseline of {meter.baseline:.2f}/s (nothing is refused for it; the next such event "
            f"for this principal comes {COOLDOWN_S:.0f} s later at the earliest)"
        ),
    )
