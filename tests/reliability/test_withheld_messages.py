"""A failed prediction's traceback in the log, in both formats: where it failed and the types of
its exceptions, Dockyard's own messages, never the message of a framework's exception, which may
quote the request's values."""

from __future__ import annotations

import json
import logging
import sys

from dockyard.errors import PredictionFailed
from dockyard.reliability import logs

VALUE = "alice@example.com"


def failing_prediction() -> None:
    raise ValueError(f"could not convert string to float: {VALUE!r}")


def record(quotes_request: bool) -> logging.LogRecord:
    try:
        try:
            failing_prediction()
        except ValueError as exc:
            raise PredictionFailed("sklearn model failed to predict: ValueError") from exc
    except PredictionFailed:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    if quotes_request:
        made.__dict__.update(logs.QUOTES_REQUEST)
    return made


def test_the_text_log_withholds_foreign_messages() -> None:
    line = logs.TextFormatter().format(record(quotes_request=True))

    assert VALUE not in line
    assert "Traceback (most recent call last):" in line
    assert "in failing_prediction" in line
    assert f"ValueError: {logs.WITHHELD}" in line
    assert "direct cause of the following exception" in line
    assert line.endswith(
        "dockyard.errors.PredictionFailed: sklearn model failed to predict: ValueError"
    )


def test_the_json_log_withholds_them_too() -> None:
    data = json.loads(logs.JsonFormatter().format(record(quotes_request=True)))

    assert VALUE not in json.dumps(data)
    assert "quotes_request" not in data
    assert f"ValueError: {logs.WITHHELD}" in data["exception"]


def test_a_context_is_shown_as_python_shows_it() -> None:
    try:
        try:
            failing_prediction()
        except ValueError:
            known: dict[str, int] = {}
            _ = known[VALUE]  # a KeyError raised while handling the ValueError
    except KeyError as exc:
        text = logs.withheld_traceback(exc)
    assert VALUE not in text
    assert "During handling of the above exception, another exception occurred" in text
    assert text.endswith(f"KeyError: {logs.WITHHELD}")


def test_other_records_keep_their_messages() -> None:
    line = logs.TextFormatter().format(record(quotes_request=False))
    assert VALUE in line
