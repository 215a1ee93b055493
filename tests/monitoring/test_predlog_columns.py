"""Requests of numbers are copied into blocks of columns as they are appended (``columns.Block``)
and let go at once; the rows written are those the same requests queued by reference give, in
the order they were answered, whatever mix of layouts, versions, days, dtypes and widths."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from clocks import Clock
from dockyard.home import Home
from dockyard.monitoring.predlog import PredictionLog, columns, read_predictions, writer
from dockyard.monitoring.predlog.columns import Block
from monitoring.test_predlog import TENSORS, tabular_request, version_of

DAY = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)
NEXT_DAY = datetime(2025, 3, 2, 0, 0, 1, tzinfo=UTC)
ORDER = [("request_id", "ascending"), ("row", "ascending")]


def _log(root: Path, clock: Clock) -> PredictionLog:
    return PredictionLog(root / "predictions", clock=clock)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def _queued(log: PredictionLog) -> list[str]:
    """What the log holds before a flush, oldest first, once the requests it gathered are
    absorbed: ``block:<requests>`` or ``entry``."""
    log._absorb()
    items = [*log._queue, *([log._open] if log._open is not None else [])]
    return [f"block:{item.requests}" if isinstance(item, Block) else "entry" for item in items]


def test_requests_of_numbers_are_copied_and_let_go_once_gathered(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log holds the requests it gathers (``GATHER_REQUESTS``), then copies them all and
    keeps nothing of them: their arrays die with the caller's references."""
    monkeypatch.setattr(writer, "GATHER_REQUESTS", 3)
    log = _log(home.root, Clock(DAY))
    version = version_of("fraud", 1)
    sent, kept = [], []
    for index in range(4):
        inputs, outputs = tabular_request(2, index)
        sent.append(inputs["input-0"][:, 0].tolist())
        kept.append(weakref.ref(outputs["predict_proba"]))
        log.append(version, f"r{index}", "p", 0.01, inputs, outputs)
        del inputs, outputs
    assert [ref() is None for ref in kept] == [True, True, True, False]  # the last one gathered
    assert log.pending_rows == 8
    assert log.flush() == 8
    assert kept[-1]() is None
    table = read_predictions(home, "fraud")
    assert table["input.amount"].to_pylist() == [value for values in sent for value in values]


Tensors = dict[str, np.ndarray]


def _x(seed: int, rows: int = 1) -> Tensors:
    return tabular_request(rows, seed)[0]


def _y(predict: list[int], dtype: type = np.int64, **extra: np.ndarray) -> Tensors:
    return {"predict": np.array(predict, dtype), **extra}


PER_FEATURE = {feature: np.array([1.5]) for feature in ("amount", "age", "score")}
MIXED: list[tuple[str, Callable[[], tuple[Tensors, Tensors]]]] = [
    ("one row", lambda: tabular_request(1, 1)),
    ("three rows", lambda: tabular_request(3, 2)),
    ("fewer outputs", lambda: (_x(3, 2), _y([1, 0]))),
    ("int32 predict", lambda: (_x(4), _y([7], np.int32))),
    ("a flag", lambda: (_x(5), _y([1], flag=np.array([True])))),
    ("a count", lambda: (_x(6), _y([1], flag=np.array([3])))),
    ("one tensor per feature", lambda: (PER_FEATURE, _y([1]))),
    ("a wide row", lambda: (_x(8), _y([0], embedding=np.ones((1, 3000))))),
    ("back to one row", lambda: tabular_request(1, 7)),
]


def test_copied_and_queued_requests_give_the_same_rows_in_the_same_order(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every layout the log takes, across two versions and midnight, through a log that copies
    what it can and through one that copies nothing (``COPY_ROW_BYTES`` 0): the same rows; the
    copying log's in the order appended, per version and day."""
    requests = [(name, *make()) for name, make in MIXED]
    images = {"image": np.ones((2, 2, 2), np.float32), "tag": np.array(["a", "b"], object)}
    logits = {"logits": np.zeros((2, 3), np.float32)}
    versions = [version_of("fraud", 1), version_of("fraud", 2)]

    def replay(log: PredictionLog, clock: Clock) -> list[str]:
        """Append every request; what the log held before its flush."""
        for moment in (DAY, NEXT_DAY):
            clock.at(moment)
            for version in versions:
                for name, inputs, outputs in requests:
                    request_id = f"{moment.day}-{version.version}-{name}"
                    log.append(version, request_id, "p", 0.01, inputs, outputs)
                log.append(version_of("vision", 1, TENSORS), "text", "p", 0.01, images, logits)
        held = _queued(log)
        log.flush()
        assert log.shed_rows == 0
        return held

    clock = Clock(DAY)
    copying = _log(home.root, clock)
    assert "block:2" in replay(copying, clock)
    monkeypatch.setattr(columns, "COPY_ROW_BYTES", 0)
    reference = Home(tmp_path / "reference").ensure()
    assert set(replay(_log(reference.root, clock), clock)) == {"entry"}
    for model in ("fraud", "vision"):  # the reference builds a slice's layouts apart: sorted
        copied, queued = (read_predictions(h, model).sort_by(ORDER) for h in (home, reference))
        assert copied.equals(queued)
    rows = read_predictions(home, "fraud").to_pylist()
    assert len(rows) == 4 * sum(len(outputs["predict"]) for _, _, outputs in requests)
    for version in versions:
        for moment in (DAY, NEXT_DAY):
            ids = [
                row["request_id"]
                for row in rows
                if row["version"] == version.version and row["time"].day == moment.day
            ]
            expected = [f"{moment.day}-{version.version}-{name}" for name, *_ in requests]
            assert list(dict.fromkeys(ids)) == expected


def test_what_each_request_goes_to(home: Home) -> None:
    """A block per run of one version, day and layout; a request it cannot copy (text, a row
    wider than ``COPY_ROW_BYTES``, an array not C-contiguous) or another dtype closes the block
    it follows, so order is kept."""
    clock = Clock(DAY)
    log = _log(home.root, clock)
    version = version_of("fraud", 1)
    for index in range(3):
        log.append(version, f"a{index}", "p", 0.01, *tabular_request(1, index))
    inputs, outputs = tabular_request(1, 9)
    log.append(version, "wide", "p", 0.01, {"input-0": np.ones((1, 3000))}, outputs)
    log.append(version, "b", "p", 0.01, inputs, outputs)
    fortran, two = (
        np.asfortranarray(tabular_request(2, 10)[0]["input-0"]),
        tabular_request(2, 10)[1],
    )
    log.append(version, "fortran", "p", 0.01, {"input-0": fortran}, two)
    log.append(version, "int", "p", 0.01, {"input-0": np.array([[5, 2, 3]])}, outputs)
    second = version_of("fraud", 2)
    log.append(second, "v2", "p", 0.01, inputs, outputs)
    clock.at(NEXT_DAY)
    log.append(second, "day", "p", 0.01, inputs, outputs)  # the same version: the day splits
    assert _queued(log) == ["block:3", "entry", "block:1", "entry", "block:1", "block:1", "block:1"]
    log.flush()
    rows = read_predictions(home, "fraud").to_pylist()
    assert [row["request_id"] for row in rows if row["version"] == 1] == [
        "a0", "a1", "a2", "wide", "b", "fortran", "fortran", "int"
    ]  # fmt: skip
    assert sorted(row["request_id"] for row in rows if row["version"] == 2) == ["day", "v2"]
    assert [row["input.amount"] for row in rows if row["request_id"] == "int"] == [5.0]


def test_a_full_block_is_queued_and_the_next_one_opened(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows beyond a block's capacity (``BLOCK_ROWS``, fewer for wide rows: ``BLOCK_BYTES``) go
    to a new block; a request of more rows than a block holds is queued by reference."""
    version = version_of("fraud", 1)
    wide = Block.open(
        (version, "w", "p", 0.01, 0.0, 1, {"x": np.ones((1, 1000))}, {"y": np.ones(1)})
    )
    assert wide is not None
    assert wide.capacity == columns.BLOCK_BYTES // 8008
    monkeypatch.setattr(columns, "BLOCK_ROWS", 4)
    log = _log(home.root, Clock(DAY))
    for index, rows in enumerate([1, 2, 1, 2, 5, 3]):
        log.append(version, f"r{index}", "p", 0.01, *tabular_request(rows, index))
    assert _queued(log) == ["block:3", "block:1", "entry", "block:1"]
    assert log.pending_rows == 14
    assert log.flush() == 14
    rows = read_predictions(home, "fraud").select(["request_id", "row"]).to_pylist()
    assert [(r["request_id"], r["row"]) for r in rows] == [
        (f"r{index}", row) for index, count in enumerate([1, 2, 1, 2, 5, 3]) for row in range(count)
    ]


def test_appends_racing_the_writer_lose_and_repeat_nothing(home: Home) -> None:
    """The event loop copies into the open block while the writer thread takes it at each
    flush (every 5 ms here): every row is written once, in order."""
    log = PredictionLog(home.root / "predictions", flush_s=0.005)
    version = version_of("fraud", 1)
    count = 20_000

    async def serve() -> None:
        await log.start()
        for index in range(count):
            log.append(version, f"{index:05d}", "p", 0.01, *tabular_request(1 + index % 2, 0))
            if index % 50 == 0:
                await asyncio.sleep(0)  # the writer flushes meanwhile
        await log.close()

    asyncio.run(serve())
    assert log.shed_rows == 0
    ids = read_predictions(home, "fraud")["request_id"].to_pylist()
    assert list(dict.fromkeys(ids)) == [f"{index:05d}" for index in range(count)]
    assert len(ids) == count + count // 2
