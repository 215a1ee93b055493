"""Dockyard's logs: one format for its own records and uvicorn's, each with the request id.

``configure`` gives the root logger a single ``QueueHandler``; a ``QueueListener`` thread formats
and writes the records (text for a terminal or JSON lines), so the event loop only queues them.
Records carry the request id of the request being served (``REQUEST_ID``, a context variable the
serving layer sets once per request), stamped when the record is made. ``access`` writes one
access record through the same queue. Call ``configure`` again in each forked worker: the
listener thread does not survive a fork. The exception of a record made with
``extra=QUOTES_REQUEST`` (a failed prediction) is written without the messages that could quote
the request's values.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import logging.handlers
import os
import queue
import signal
import sys
import time
import traceback
from typing import IO, Any

import orjson

from dockyard.errors import DockyardError

FORMATS = ("text", "json")
REQUEST_ID: contextvars.ContextVar[str | bytes] = contextvars.ContextVar(
    "dockyard_request_id", default=""
)
"""The id of the request being served (bytes as the hot path has it, or str); "" outside one."""
access_logger = logging.getLogger("dockyard.access")
_STANDARD = frozenset(
    (
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "request_id",
        "color_message",  # uvicorn's colored copy of the message
        "taskName",
        "quotes_request",
    )
)
QUOTES_REQUEST = {"quotes_request": True}
"""``extra=`` of a record whose exception may quote a request's values (a model's or a library's
own message: "could not convert 'alice@example.com'"): its traceback is written with the message
of every exception but Dockyard's own (which never holds one) withheld, so no input value reaches
the log."""
WITHHELD = "(message withheld: it may quote a request's values)"
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_state: dict[str, Any] = {}


def _time(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class RequestIdFilter(logging.Filter):
    """Stamps the current request id on every record (in the thread that makes the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            value = REQUEST_ID.get()
            record.request_id = value.decode("latin-1") if isinstance(value, bytes) else value
        return True


class TextFormatter(logging.Formatter):
    """``2026-12-02T05:00:00.123Z INFO dockyard.x [request-id] message``."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "") or "-"
        head = f"{_time(record)} {record.levelname} {record.name} [{request_id}]"
        line = f"{head} {record.getMessage()}"
        if record.exc_info:
            line = f"{line}\n{_exception(self, record)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or None,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["exception"] = _exception(self, record)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=str).decode()


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's exception as the log writes it: as Python prints it, or withheld."""
    assert record.exc_info
    error = record.exc_info[1]
    if getattr(record, "quotes_request", False) and error is not None:
        return withheld_traceback(error)
    return formatter.formatException(record.exc_info)


def withheld_traceback(error: BaseException) -> str:
    """``error``'s traceback as Python prints it (causes and contexts first), with the message of
    each exception that is not a ``DockyardError`` replaced by ``WITHHELD``: where it failed, and
    of what type, never which value it failed on."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and not any(link is seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    parts: list[str] = []
    ordered = chain[::-1]
    for index, current in enumerate(ordered):
        if index:
            parts.append(CAUSE if current.__cause__ is ordered[index - 1] else CONTEXT)
        if current.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts += traceback.format_tb(current.__traceback__)
        kind = type(current)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        message = str(current) if isinstance(current, DockyardError) else WITHHELD
        parts.append(f"{name}: {message}\n")
    return "".join(parts).rstrip("\n")


class _Queued(logging.handlers.QueueHandler):
    """Queues the record as it is: formatting happens on the listener's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is written, not as it was when logging was
    configured: whatever replaced it since (a test's capture, a redirect) gets the records, and a
    closed replaced stream is never written to."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(level: str = "info", log_format: str = "text", stream: IO[str] | None = None) -> None:
    """Route every record (Dockyard's, uvicorn's, warnings) through one queue to one formatter
    writing to ``stream`` (stderr); ``uvicorn.access`` stays off (Dockyard writes its own)."""
    shutdown()
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(formatter(log_format))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queued = _Queued(records)
    queued.addFilter(RequestIdFilter())
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=False)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(queued)
    named_level = logging.getLevelName(level.upper())
    root.setLevel(named_level if isinstance(named_level, int) else logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    # Alembic narrates every migration step at INFO; its warnings and errors still show.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    logging.captureWarnings(True)
    listener.start()
    if not _state.get("registered"):
        atexit.register(shutdown)
    _state.update(listener=listener, pid=os.getpid(), registered=True)


def shutdown() -> None:
    """Write what is queued and stop the listener (a no-op in a forked child, whose copy of the
    parent's listener has no thread)."""
    listener = _state.pop("listener", None)
    if listener is not None and _state.pop("pid", None) == os.getpid():
        listener.stop()


def _flush_and_die(signum: int, frame: object) -> None:
    shutdown()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def flush_on(*signals: signal.Signals) -> None:
    """Die of these signals as by default, once what is queued is written. uvicorn re-raises the
    signal that stopped it under the handler it found, and a process killed by a signal runs no
    ``atexit`` hook: its last records (the shutdown's) would be lost."""
    for sig in signals:
        signal.signal(sig, _flush_and_die)


ACCESS_MESSAGE = "%s %s %d %.3fms client=%s principal=%s"


def access(
    method: str, path: str, status: int, seconds: float, client: str, principal: str
) -> None:
    """One access record (request id from the context), formatted on the listener's thread.
    The record is made directly: ``Logger.info`` would also walk the stack for the caller."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 3)
    record = logging.LogRecord(
        access_logger.name,
        logging.INFO,
        "",
        0,
        ACCESS_MESSAGE,
        (method, path, status, duration_ms, client or "-", principal or "-"),
        None,
    )
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = duration_ms
    record.client = client
    record.principal = principal
    access_logger.handle(record)
