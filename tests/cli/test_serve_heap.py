"""``serve`` settles its heap before serving: what is loaded is frozen out of the collector's
sight, and the youngest pass waits for ``GC_YOUNG_THRESHOLD`` new objects (not Python's 700, or
2,000 from 3.13 on), so
a worker's requests in flight and its queued log entries do not set it off dozens of times a
second."""

from __future__ import annotations

import gc

from dockyard.cli.serve import GC_YOUNG_THRESHOLD, settle_heap


def test_the_heap_is_frozen_and_the_young_pass_waits_for_many_new_objects() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 5 * before[0]
        young = [[index] for index in range(5_000)]  # tracked containers, kept alive
        # No pass ran: the count of young objects went on growing past Python's default.
        assert gc.get_count()[0] >= len(young) > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
