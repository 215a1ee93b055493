"""A clock the test sets: the time a prediction log stamps its rows with (seconds, UTC)."""

from __future__ import annotations

from datetime import datetime


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, moment: datetime) -> None:
        self.now = moment.timestamp()
