"""The prediction log in-process, on real files: what ``append`` queues is written as Parquet
segments with the contract's columns (a tabular model's matrix split into its features, list
columns for wider tensors), read back by time window, version and columns, touching only the
day folders and segments that can match; sealed with the encryption key when one is set;
sampled per model; never overwriting a segment."""

from __future__ import annotations

import asyncio
import base64
import os
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clocks import Clock
from dockyard.config import Settings
from dockyard.errors import DockyardError, InvalidInput
from dockyard.home import Home
from dockyard.monitoring.predlog import (
    PredictionLog,
    columns,
    encode_table,
    log_cipher,
    read_predictions,
    writer,
)
from dockyard.monitoring.predlog.layout import BASE_SCHEMA
from dockyard.monitoring.predlog.storage import concat
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature, TensorSpec
from registry.conftest import DIGEST, LINEAGE

DAY = datetime(2025, 3, 1, tzinfo=UTC)
FEATURES = ("amount", "age", "score")
TABULAR = Signature(
    inputs=tuple(TensorSpec(name, "FP64", (-1,)) for name in FEATURES),
    outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 2))),
    tabular=True,
)
TENSORS = Signature(
    inputs=(TensorSpec("image", "FP32", (-1, 2, 2)), TensorSpec("tag", "BYTES", (-1,))),
    outputs=(TensorSpec("logits", "FP32", (-1, 3)),),
    tabular=False,
)


def version_of(model: str, number: int, signature: Signature = TABULAR) -> ModelVersion:
    return ModelVersion(
        model=model,
        version=number,
        framework="sklearn",
        artifact=ArtifactRef(DIGEST, "skops"),
        signature=signature,
        lineage=LINEAGE,
    )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY)


@pytest.fixture
def make_log(home: Home, clock: Clock) -> Callable[..., PredictionLog]:
    def make(**options: object) -> PredictionLog:
        return PredictionLog(home.root / "predictions", clock=clock, **options)  # type: ignore[arg-type]

    return make


def tabular_request(rows: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    proba = rng.uniform(size=(rows, 1))
    outputs = {
        "predict": (proba[:, 0] > 0.5).astype(np.int64),
        "predict_proba": np.hstack([1 - proba, proba]),
    }
    return {"input-0": x}, outputs


def segment_files(home: Home, model: str) -> list[Path]:
    return sorted((home.root / "predictions" / model).rglob("*.parquet*"))


def test_rows_are_written_with_the_contract_columns_and_read_back(
    home: Home, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log()
    version = version_of("fraud", 2)
    sent = {}
    for index, rows in enumerate([1, 3, 2]):
        inputs, outputs = tabular_request(rows, index)
        log.append(version, f"req-{index}", "key:alice", 0.004, inputs, outputs)
        sent[f"req-{index}"] = (inputs["input-0"], outputs)
    # A request sending one tensor per feature ([N] and [N, 1]) lands in the same columns.
    columns = {"amount": np.array([5.0, 6.0]), "age": np.array([[40.0], [41.0]])}
    columns["score"] = np.array([0.1, 0.2])
    outputs = {"predict": np.array([1, 0]), "predict_proba": np.array([[0.2, 0.8], [0.9, 0.1]])}
    log.append(version, "req-columns", "open:anonymous", 0.5, columns, outputs)
    assert log.pending_rows == 8
    assert log.flush() == 8
    assert log.pending_rows == 0
    assert log.written_rows == 8
    assert log.shed_rows == 0

    (segment,) = segment_files(home, "fraud")
    assert segment.parent.name == "2025-03-01"
    assert segment.name == f"{os.getpid()}-{int(DAY.timestamp() * 1000)}.parquet"
    assert segment.stat().st_mode & 0o777 == 0o600
    table = read_predictions(home, "fraud")
    assert table.column_names == [
        "request_id",
        "row",
        "time",
        "principal",
        "model",
        "version",
        "latency_ms",
        "input.amount",
        "input.age",
        "input.score",
        "output.predict",
        "output.predict_proba",
    ]
    schema = table.schema
    assert schema.field("row").type == pa.int32()
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("version").type == pa.int32()
    assert schema.field("latency_ms").type == pa.float32()
    assert schema.field("output.predict_proba").type == pa.list_(pa.float64())
    rows = table.to_pylist()
    assert [(r["request_id"], r["row"]) for r in rows] == [
        ("req-0", 0),
        ("req-1", 0),
        ("req-1", 1),
        ("req-1", 2),
        ("req-2", 0),
        ("req-2", 1),
        ("req-columns", 0),
        ("req-columns", 1),
    ]
    for row in rows[:6]:
        matrix, outputs = sent[row["request_id"]]
        features = matrix[row["row"]]
        assert [row[f"input.{name}"] for name in FEATURES] == features.tolist()
        assert row["output.predict"] == outputs["predict"][row["row"]]
        assert row["output.predict_proba"] == outputs["predict_proba"][row["row"]].tolist()
        assert row["principal"] == "key:alice"
        assert row["latency_ms"] == pytest.approx(4.0)
        assert row["model"] == "fraud"
        assert row["version"] == 2
        assert row["time"] == DAY
    assert [rows[6]["input.age"], rows[7]["input.age"]] == [40.0, 41.0]
    assert rows[7]["output.predict_proba"] == [0.9, 0.1]


def test_tensors_become_list_columns_and_text_stays_text(
    home: Home, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log()
    version = version_of("vision", 1, TENSORS)
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    tags = np.array(["cat", b"dog"], dtype=object)
    logits = np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]], dtype=np.float32)
    log.append(version, "a", "p", 0.01, {"image": image, "tag": tags}, {"logits": logits})
    log.flush()
    table = read_predictions(home, "vision")
    assert table.schema.field("input.image").type == pa.list_(pa.float32())
    assert table.schema.field("input.tag").type == pa.string()
    assert table["input.image"].to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert table["input.tag"].to_pylist() == ["cat", "dog"]
    assert table["output.logits"].to_pylist()[1] == pytest.approx([0.5, 0.4, 0.1])


def test_requests_that_asked_for_fewer_outputs_leave_those_columns_null(
    home: Home, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log()
    version = version_of("fraud", 1)
    inputs, outputs = tabular_request(2, 0)
    log.append(version, "both", "p", 0.01, inputs, outputs)
    log.append(version, "one", "p", 0.01, inputs, {"predict": outputs["predict"]})
    log.flush()
    table = read_predictions(home, "fraud")
    assert table["request_id"].to_pylist() == ["both", "both", "one", "one"]
    assert table["output.predict_proba"].null_count == 2
    assert table["output.predict"].null_count == 0


def test_the_reader_filters_by_time_version_and_columns(
    home: Home, clock: Clock, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log()
    for hour in range(6):
        clock.at(DAY + timedelta(hours=hour))
        version = version_of("fraud", 1 + hour % 2)
        inputs, outputs = tabular_request(1, hour)
        log.append(version, f"h{hour}", "p", 0.01, inputs, outputs)
        log.flush()
    window = read_predictions(
        home, "fraud", since=DAY + timedelta(hours=2), until=DAY + timedelta(hours=5)
    )
    assert window["request_id"].to_pylist() == ["h2", "h3", "h4"]
    naive = read_predictions(home, "fraud", since=datetime(2025, 3, 1, 4))
    assert naive["request_id"].to_pylist() == ["h4", "h5"]
    second = read_predictions(home, "fraud", version=2, columns=["request_id", "version"])
    assert second.column_names == ["request_id", "version"]
    assert second["request_id"].to_pylist() == ["h1", "h3", "h5"]
    some = read_predictions(home, "fraud", columns=["input.age", "output.nothing"])
    assert some.column_names == ["input.age"]
    assert some.num_rows == 6
    assert read_predictions(home, "unknown").num_rows == 0
    with pytest.raises(InvalidInput, match="model name"):
        read_predictions(home, "../secrets")


def test_only_matching_days_and_segments_are_read(
    home: Home, clock: Clock, make_log: Callable[..., PredictionLog]
) -> None:
    """Segments outside the window are not opened: damaged ones there break nothing."""
    log = make_log()
    moments = [
        DAY - timedelta(seconds=1),  # the day before
        DAY + timedelta(minutes=1),
        DAY + timedelta(minutes=30),
        DAY + timedelta(minutes=31),
    ]
    for index, moment in enumerate(moments):
        clock.at(moment)
        inputs, outputs = tabular_request(1, index)
        log.append(version_of("fraud", 1), f"r{index}", "p", 0.01, inputs, outputs)
        log.flush()
    files = segment_files(home, "fraud")
    assert [file.parent.name for file in files] == ["2025-02-28", *["2025-03-01"] * 3]
    assert len(read_predictions(home, "fraud")) == 4
    for damaged in files[:2]:  # the day before, and the day's segment older than the window
        damaged.write_bytes(b"not parquet")
    since = DAY + timedelta(minutes=10)
    assert read_predictions(home, "fraud", since=since)["request_id"].to_pylist() == ["r2", "r3"]
    with pytest.raises(pa.ArrowInvalid):
        read_predictions(home, "fraud", since=DAY)  # the damaged segment of the day is read


def test_limit_keeps_the_newest_rows_and_reads_no_older_segment(
    home: Home, clock: Clock, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log()
    for index in range(5):
        clock.at(DAY + timedelta(minutes=index))
        for request in range(3):
            inputs, outputs = tabular_request(2, request)
            log.append(version_of("fraud", 1), f"s{index}-{request}", "p", 0.01, inputs, outputs)
        log.flush()
    files = segment_files(home, "fraud")
    for damaged in files[:3]:
        damaged.write_bytes(b"not parquet")
    newest = read_predictions(home, "fraud", limit=8, columns=["request_id", "row"])
    assert newest.column_names == ["request_id", "row"]
    expected = [f"s{index}-{request}" for index in (3, 4) for request in range(3) for _ in "ab"]
    assert newest["request_id"].to_pylist() == expected[-8:]


def test_sampling_keeps_the_configured_share_per_model(
    home: Home, make_log: Callable[..., PredictionLog]
) -> None:
    log = make_log(sample=0.25, samples={"all": 1.0, "none": 0.0})
    inputs, outputs = tabular_request(1, 0)
    for index in range(4000):
        for model in ("fraud", "all", "none"):
            log.append(version_of(model, 1), f"r{index}", "p", 0.01, inputs, outputs)
    log.flush()
    assert read_predictions(home, "all").num_rows == 4000
    assert read_predictions(home, "none").num_rows == 0
    assert 800 <= read_predictions(home, "fraud").num_rows <= 1200  # 1000 ± 7 sigma


def test_for_worker_reads_the_settings(home: Home) -> None:
    settings = Settings(
        home=home.root,
        log_sample=0.0,
        log_queue_rows=3,
        models={"kept": {"log_sample": 1.0}},
    )
    log = PredictionLog.for_worker(settings, home)
    inputs, outputs = tabular_request(2, 0)
    log.append(version_of("fraud", 1), "sampled-out", "p", 0.01, inputs, outputs)
    log.append(version_of("kept", 1), "first", "p", 0.01, inputs, outputs)
    log.append(version_of("kept", 1), "over-the-queue", "p", 0.01, inputs, outputs)
    assert log.shed_rows == 2
    assert log.pending_rows == 2
    log.flush()
    assert read_predictions(home, "kept")["request_id"].to_pylist() == ["first", "first"]
    assert not segment_files(home, "fraud")
    assert segment_files(home, "kept")[0].name.endswith(".parquet")


def test_segments_are_sealed_when_an_encryption_key_is_set(home: Home, clock: Clock) -> None:
    settings = Settings(home=home.root, encryption_key=base64.b64encode(b"k" * 32).decode())
    cipher = log_cipher(settings, home)
    assert cipher is not None
    assert log_cipher(Settings(home=home.root), home) is None
    log = PredictionLog(home.root / "predictions", cipher=cipher, clock=clock)
    inputs, outputs = tabular_request(3, 0)
    log.append(version_of("fraud", 1), "secret", "p", 0.01, inputs, outputs)
    log.flush()
    (segment,) = segment_files(home, "fraud")
    assert segment.name.endswith(".parquet.sealed")
    raw = segment.read_bytes()
    assert not raw.startswith(b"PAR1")
    assert b"secret" not in raw
    table = read_predictions(home, "fraud", cipher=cipher)
    assert table["request_id"].to_pylist() == ["secret"] * 3
    assert table["input.amount"].to_pylist() == inputs["input-0"][:, 0].tolist()
    with pytest.raises(DockyardError, match="encrypted: set encryption_key"):
        read_predictions(home, "fraud")
    # Sealed to its name: moved under another name, it no longer opens.
    segment.rename(segment.with_name(f"{os.getpid()}-1.parquet.sealed"))
    with pytest.raises(DockyardError, match="altered or moved"):
        read_predictions(home, "fraud", cipher=cipher)


def test_an_existing_segment_is_never_overwritten(
    home: Home, clock: Clock, make_log: Callable[..., PredictionLog]
) -> None:
    """A restarted worker may get the process id of an earlier one: its segments stay."""
    log = make_log()
    inputs, outputs = tabular_request(1, 0)
    log.append(version_of("fraud", 1), "first", "p", 0.01, inputs, outputs)
    log.flush()
    (first,) = segment_files(home, "fraud")
    pid, seq = first.name.removesuffix(".parquet").split("-")
    taken = [first.with_name(f"{pid}-{int(seq) + step}.parquet") for step in range(1, 20)]
    for path in taken:
        path.write_bytes(b"an earlier worker's segment")
    log.append(version_of("fraud", 1), "second", "p", 0.01, inputs, outputs)
    log.flush()
    assert all(path.read_bytes() == b"an earlier worker's segment" for path in taken)
    new = set(segment_files(home, "fraud")) - {first, *taken}
    assert [path.name for path in new] == [f"{pid}-{int(seq) + 20}.parquet"]
    assert pq.read_table(new.pop())["request_id"].to_pylist() == ["second"]


def test_close_writes_everything_queued(home: Home, make_log: Callable[..., PredictionLog]) -> None:
    log = make_log(flush_s=3600.0)  # the writer thread would not flush before close

    async def run() -> None:
        await log.start()
        for index in range(50):
            inputs, outputs = tabular_request(1, index)
            log.append(version_of("fraud", 1), f"r{index}", "p", 0.01, inputs, outputs)
        await log.close()

    asyncio.run(run())
    assert read_predictions(home, "fraud").num_rows == 50
    assert log.written_rows == 50
    assert log.pending_rows == 0


def test_exports_in_each_format(home: Home, make_log: Callable[..., PredictionLog]) -> None:
    log = make_log()
    inputs, outputs = tabular_request(2, 0)
    log.append(version_of("fraud", 1), "r,1", "p", 0.01, inputs, outputs)
    log.flush()
    table = read_predictions(home, "fraud")
    assert pq.read_table(pa.BufferReader(encode_table(table, "parquet"))).equals(table)
    lines = encode_table(table, "csv").decode().splitlines()
    assert lines[0].split(",")[:2] == ['"request_id"', '"row"']
    probabilities = outputs["predict_proba"][0].tolist()
    assert lines[1].startswith('"r,1",0,2025-03-01 00:00:00.000000Z,')
    assert lines[1].endswith(f'"[{probabilities[0]},{probabilities[1]}]"')
    rows = __import__("json").loads(encode_table(table, "json"))
    assert rows[1]["row"] == 1
    assert rows[1]["time"] == "2025-03-01T00:00:00+00:00"
    assert rows[1]["output.predict_proba"] == outputs["predict_proba"][1].tolist()
    with pytest.raises(InvalidInput, match="format must be one of csv, json, parquet"):
        encode_table(table, "xml")


def test_a_flush_builds_a_slice_at_a_time_and_pauses_between_slices(
    home: Home, make_log: Callable[..., PredictionLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer gives the GIL back to the event loop between slices of the queue (as long as
    the slice took), yet writes one segment holding every row in order; closing, it does not
    pause."""
    monkeypatch.setattr(columns, "COPY_ROW_BYTES", 0)  # every request queued by reference
    monkeypatch.setattr(writer, "SLICE_REQUESTS", 4)
    monkeypatch.setattr(writer, "GATHER_REQUESTS", 1)  # each queued as it is appended
    log = make_log(flush_s=3600.0)
    pauses: list[float] = []
    monkeypatch.setattr(log, "_pause", pauses.append)
    ticks = iter(range(1_000))  # the writer's CPU clock: one second more at each reading
    monkeypatch.setattr(writer.time, "thread_time", lambda: float(next(ticks)))
    version = version_of("fraud", 1)
    for index in range(10):
        inputs, outputs = tabular_request(1 + index % 3, index)
        if index >= 6:  # the last slice asked for fewer outputs: its column is null there
            outputs = {"predict": outputs["predict"]}
        log.append(version, f"r{index}", "p", 0.01, inputs, outputs)
    assert log.flush() == 19
    assert len(pauses) == 2  # after the first and second slices of 4, none after the last
    assert all(seconds >= 0 for seconds in pauses)
    # The whole flush counts as the writer's CPU: the build from its start to its end (7
    # readings: the start, two per paused slice, the last slice's start, the end: 6 s), then
    # the write (2 readings: 1 s).
    assert log.writer_seconds == 7.0
    assert len(segment_files(home, "fraud")) == 1
    table = read_predictions(home, "fraud")
    ids = [f"r{index}" for index in range(10) for _ in range(1 + index % 3)]
    assert table["request_id"].to_pylist() == ids
    assert table["output.predict_proba"].null_count == sum(1 + i % 3 for i in range(6, 10))
    assert log.pending_rows == 0

    async def closing() -> None:
        await log.start()
        for index in range(10):
            inputs, outputs = tabular_request(1, index)
            log.append(version, f"c{index}", "p", 0.01, inputs, outputs)
        await log.close()

    asyncio.run(closing())
    assert len(pauses) == 2
    assert log.written_rows == 29


def test_slices_and_segments_whose_columns_do_not_join_are_joined_as_lists(
    home: Home, make_log: Callable[..., PredictionLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor outside the signature, one value per row in one slice and two in the next, is
    written as the list column a table built of both requests has: no row is shed. Across
    segments (two flushes), it is read back as that list column too."""
    monkeypatch.setattr(writer, "SLICE_REQUESTS", 1)
    log = make_log()
    version = version_of("fraud", 1)
    scores = [np.array([0.5]), np.array([[0.1, 0.9]]), np.array([0.7]), np.array([[0.2, 0.8]])]
    for index, values in enumerate(scores):
        inputs, outputs = tabular_request(1, index)
        log.append(version, f"r{index}", "p", 0.01, inputs, {**outputs, "scores": values})
        if index == 1:
            assert log.flush() == 2
    assert log.flush() == 2
    assert log.shed_rows == 0
    assert len(segment_files(home, "fraud")) == 2
    read = read_predictions(home, "fraud")["output.scores"].to_pylist()
    assert read == [[0.5], [0.1, 0.9], [0.7], [0.2, 0.8]]


def test_tables_join_a_value_per_row_with_lists_and_numbers_with_text() -> None:
    """What segments or slices of one log may disagree on: a column null in one table, a list in
    another and a value per row in a third is a list column (values as lists of one, nulls
    kept); a column a number in one and text in another (a pseudonym) is text; one booleans in
    one and numbers in another is numbers."""
    tables = [
        pa.table({"s": pa.array([None, None]), "x": pa.array([1, 2]), "b": [True, False]}),
        pa.table({"s": pa.array([[0.1, 0.9]]), "x": pa.array(["a1b2"]), "b": [3]}),
        pa.table({"s": pa.array([0.5, None]), "b": [0.5, 1.5]}),
    ]
    joined = concat(tables, BASE_SCHEMA)
    assert joined["s"].to_pylist() == [None, None, [0.1, 0.9], [0.5], None]
    assert joined["x"].to_pylist() == ["1", "2", "a1b2", None, None]
    assert joined["b"].to_pylist() == [1.0, 0.0, 3.0, 0.5, 1.5]


def test_the_writer_builds_rows_long_before_it_writes_them(
    home: Home, make_log: Callable[..., PredictionLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued request's arrays are let go once the writer has built its rows (every
    ``BUILD_EVERY_S``, when they fill a slice), not held until the segment is written at the
    flush."""
    monkeypatch.setattr(columns, "COPY_ROW_BYTES", 0)  # every request queued by reference
    monkeypatch.setattr(writer, "SLICE_REQUESTS", 1)
    log = make_log(flush_s=3600.0)
    version = version_of("fraud", 1)
    inputs, outputs = tabular_request(3, 0)
    kept = weakref.ref(inputs["input-0"])

    async def serving() -> None:
        await log.start()
        log.append(version, "r0", "p", 0.01, inputs, outputs)
        inputs.clear()
        for _ in range(100):  # 10 s
            if kept() is None:
                break
            await asyncio.sleep(writer.BUILD_EVERY_S)
        assert kept() is None, "the request's arrays are still held"
        assert log.written_rows == 0
        assert log.pending_rows == 3
        assert not segment_files(home, "fraud")
        await log.close()

    asyncio.run(serving())
    assert log.written_rows == 3
    assert read_predictions(home, "fraud")["request_id"].to_pylist() == ["r0"] * 3


def test_between_flushes_only_whole_slices_are_built(
    home: Home, make_log: Callable[..., PredictionLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's builds between flushes take whole slices and leave the rest queued (a few
    requests cost about as much to build as a slice); the flush builds and writes them all."""
    monkeypatch.setattr(columns, "COPY_ROW_BYTES", 0)  # every request queued by reference
    monkeypatch.setattr(writer, "SLICE_REQUESTS", 4)
    monkeypatch.setattr(writer, "GATHER_REQUESTS", 1)  # each queued as it is appended
    log = make_log(flush_s=3600.0)
    version = version_of("fraud", 1)
    kept = []
    for index in range(10):
        inputs, outputs = tabular_request(1, index)
        kept.append(weakref.ref(inputs["input-0"]))
        log.append(version, f"r{index}", "p", 0.01, inputs, outputs)
    del inputs, outputs
    log.build(whole_slices=True)
    assert [ref() is None for ref in kept] == [True] * 8 + [False] * 2
    assert log.written_rows == 0
    assert log.pending_rows == 10
    assert not segment_files(home, "fraud")
    assert log.flush() == 10
    assert all(ref() is None for ref in kept)
    assert len(segment_files(home, "fraud")) == 1
    ids = read_predictions(home, "fraud")["request_id"].to_pylist()
    assert ids == [f"r{index}" for index in range(10)]
