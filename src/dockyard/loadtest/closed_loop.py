"""Closed-loop load: ``connections`` clients, each sending its next request as soon as its last
one is answered, for the stage's duration. It measures the throughput a fixed concurrency gets
(and the latency it costs); a connection the server closes is replaced by a new one."""

from __future__ import annotations

import asyncio
import time

from dockyard.loadtest.connections import CONNECT_FAILED, Connection, Pool, Tally
from dockyard.loadtest.target import Target

SWEEP_S = 0.01
RECONNECT_PAUSE_S = 0.01
"""Pause before replacing a lost connection: a refusing server is not hammered by reconnects."""


async def closed_loop(
    target: Target,
    requests: list[bytes],
    *,
    connections: int,
    duration_s: float,
    timeout_s: float,
    tally: Tally,
) -> float:
    """Keep ``connections`` requests in flight for ``duration_s``; return the elapsed seconds
    (the duration and the wait for the last answers)."""
    is_running = True
    replacing: set[asyncio.Task[None]] = set()

    def on_free(connection: Connection) -> None:
        if is_running:
            tally.sent += 1
            pool.send(connection, time.monotonic())
        else:
            pool.idle.append(connection)

    def on_lost() -> None:
        if is_running:
            task = asyncio.get_running_loop().create_task(replace())
            replacing.add(task)
            task.add_done_callback(replacing.discard)

    async def replace() -> None:
        await asyncio.sleep(RECONNECT_PAUSE_S)
        connection = await pool.open()
        if connection is not None:
            on_free(connection)
        elif is_running:
            tally.sent += 1
            tally.error(CONNECT_FAILED)
            on_lost()

    pool = Pool(
        target,
        requests,
        limit=connections,
        timeout_s=timeout_s,
        tally=tally,
        on_free=on_free,
        on_lost=on_lost,
    )
    opened = await asyncio.gather(*(pool.open() for _ in range(connections)))
    start = time.monotonic()
    for connection in opened:
        if connection is not None:
            on_free(connection)
        else:
            tally.sent += 1
            tally.error(CONNECT_FAILED)
            on_lost()
    while (now := time.monotonic()) < start + duration_s:
        await asyncio.sleep(min(SWEEP_S, start + duration_s - now))
        pool.sweep(time.monotonic())
    is_running = False
    for task in list(replacing):
        task.cancel()
    await asyncio.gather(*replacing, return_exceptions=True)
    await pool.drain(timeout_s)
    elapsed = time.monotonic() - start
    await pool.close()
    return elapsed
