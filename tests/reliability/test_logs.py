"""``reliability.logs``: one format (text or JSON lines) with the request id, through a queue."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from dockyard.reliability import logs

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+) \[(\S+)\] (.*)$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logs.shutdown()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def _record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("dockyard.x", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_text_line_has_time_level_logger_request_id_and_message() -> None:
    line = logs.TextFormatter().format(_record("hello %s", "you", request_id="abc-1"))
    match = TEXT_LINE.match(line)
    assert match is not None, line
    assert match.groups() == ("INFO", "dockyard.x", "abc-1", "hello you")
    assert "[-]" in logs.TextFormatter().format(_record())


def test_json_line_carries_the_fields_and_extras() -> None:
    line = logs.JsonFormatter().format(
        _record("hello %s", "you", request_id="abc-1", status=200, color_message="x")
    )
    data = json.loads(line)
    assert data["level"] == "INFO"
    assert data["logger"] == "dockyard.x"
    assert data["message"] == "hello you"
    assert data["request_id"] == "abc-1"
    assert data["status"] == 200
    assert "color_message" not in data
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])


def test_json_line_holds_an_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    data = json.loads(logs.JsonFormatter().format(record))
    assert "ValueError: boom" in data["exception"]


def test_filter_stamps_the_context_request_id_bytes_or_str() -> None:
    stamp = logs.RequestIdFilter()
    token = logs.REQUEST_ID.set(b"r-bytes")
    try:
        record = _record()
        stamp.filter(record)
        assert record.request_id == "r-bytes"
        logs.REQUEST_ID.set("r-str")
        record = _record()
        stamp.filter(record)
        assert record.request_id == "r-str"
    finally:
        logs.REQUEST_ID.reset(token)
    record = _record()
    stamp.filter(record)
    assert record.request_id == ""


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.formatter("xml")


def test_configure_routes_every_logger_through_one_queue(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    token = logs.REQUEST_ID.set(b"req-7")
    try:
        logging.getLogger("dockyard.test").info("mine %d", 1)
        logging.getLogger("uvicorn.error").warning("uvicorn's")
        logging.getLogger("uvicorn.access").info("never written")
        logs.access("POST", "/v2/models/m/infer", 200, 0.0012, "127.0.0.1:5", "admin")
        logging.getLogger("dockyard.test").debug("below the level")
    finally:
        logs.REQUEST_ID.reset(token)
    logs.shutdown()  # writes what is queued
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["message"] for r in records][:2] == ["mine 1", "uvicorn's"]
    assert all(r["request_id"] == "req-7" for r in records)
    assert len(records) == 3
    access = records[2]
    assert access["logger"] == "dockyard.access"
    assert (access["method"], access["path"], access["status"]) == (
        "POST",
        "/v2/models/m/infer",
        200,
    )
    assert access["duration_ms"] == 1.2
    assert (access["client"], access["principal"]) == ("127.0.0.1:5", "admin")


def test_records_are_formatted_on_the_listener_thread(restore_logging: None) -> None:
    threads: list[str] = []

    class Spy(logs.TextFormatter):
        def format(self, record: logging.LogRecord) -> str:
            threads.append(threading.current_thread().name)
            return super().format(record)

    out = io.StringIO()
    logs.configure("info", "text", stream=out)
    queued = logging.getLogger().handlers[0]
    assert isinstance(queued, logging.handlers.QueueHandler)
    record = _record("kept %s", "lazy")
    assert queued.prepare(record) is record  # not formatted on the caller's thread
    assert record.args == ("lazy",)
    listener = logs._state["listener"]
    listener.handlers[0].setFormatter(Spy())
    logging.getLogger("dockyard.test").warning("from %s", "here")
    logs.shutdown()
    assert threads
    assert threading.current_thread().name not in threads
    match = TEXT_LINE.match(out.getvalue().strip())
    assert match is not None
    assert match.group(4) == "from here"


def test_settings_check_the_log_format() -> None:
    from dockyard.config import load_settings
    from dockyard.errors import InvalidInput

    with pytest.raises(InvalidInput, match="log_format must be text or json"):
        load_settings({"log_format": "xml"}, env={})
    settings = load_settings({}, env={"DOCKYARD_LOG_FORMAT": "json", "DOCKYARD_ACCESS_LOG": "1"})
    assert (settings.log_format, settings.access_log) == ("json", True)
    assert (load_settings({}, env={}).log_format, load_settings({}, env={}).access_log) == (
        "text",
        False,
    )
