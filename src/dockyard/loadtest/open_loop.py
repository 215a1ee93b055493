"""Open-loop arrivals: request ``i`` of a stage is due at ``start + i / rate`` whatever the server
does, and its latency runs from that scheduled time, so a server that falls behind shows its
queueing in the latencies instead of slowing the arrivals down (coordinated omission).

The loop wakes about every millisecond (an asyncio timer's resolution) and sends what is due
within the next one; a request sent that early counts from when it was sent. A request that finds
every connection of the in-flight cap busy is dropped as an error, and one the generator itself
could not send before its timeout passed is an error too: nothing queues inside the generator.
"""

from __future__ import annotations

import asyncio
import time

from dockyard.loadtest.connections import LATE, Pool, Tally
from dockyard.loadtest.target import Target

TICK_S = 0.001
SWEEP_S = 0.01
START_DELAY_S = 0.01


async def open_loop(
    target: Target,
    requests: list[bytes],
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int,
    timeout_s: float,
    tally: Tally,
) -> float:
    """Send ``rate * duration_s`` requests on schedule; return the stage's elapsed seconds (at
    least ``duration_s``, longer while the last answers arrive)."""
    pool = Pool(target, requests, limit=max_in_flight, timeout_s=timeout_s, tally=tally)
    total = max(1, round(rate * duration_s))
    start = time.monotonic() + START_DELAY_S
    next_sweep = start
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now + TICK_S - start) * rate) + 1)
        while sent < due:
            scheduled = start + sent / rate
            sent += 1
            tally.sent += 1
            if now - scheduled > timeout_s:
                tally.error(LATE)
            else:
                pool.dispatch(min(scheduled, now))
        if now >= next_sweep:
            pool.sweep(now)
            next_sweep = now + SWEEP_S
        await asyncio.sleep(max(0.0, start + sent / rate - TICK_S - time.monotonic()))
    await pool.drain(timeout_s)
    elapsed = max(duration_s, time.monotonic() - start)
    await pool.close()
    return elapsed
