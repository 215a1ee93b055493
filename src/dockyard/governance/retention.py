"""How long logged requests are kept: ``[governance] retention`` of ``dockyard.toml``, read here
once so ``dockyard serve`` hands the monitoring jobs a period (or None: keep forever) rather than
text, and a mistake in it stops the server with one line naming the key."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from dockyard.config import Settings
from dockyard.errors import InvalidInput
from dockyard.security.keystore import parse_duration

KEY = "retention"
FORM = 'a duration such as "90d", "12h" or "2w" ("" or no key: keep the log forever)'


def retention_period(settings: Settings) -> timedelta | None:
    """The ``retention`` of ``settings.governance``: logged predictions, their labels and drift
    reports older than it are purged; None when absent or ``""`` (kept forever). InvalidInput
    names the value when it is not a positive duration."""
    value = settings.governance.get(KEY, "")
    if isinstance(value, str) and not value.strip():
        return None
    period = None
    if isinstance(value, str):
        with contextlib.suppress(InvalidInput):
            period = parse_duration(value)
    if not period:
        raise InvalidInput(f"[governance] {KEY} of dockyard.toml is {value!r}: use {FORM}")
    return period
