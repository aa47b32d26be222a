"""The daemon's log: JSON one object per line with the call's ids; text on one line, never wrapped."""

from __future__ import annotations

import contextvars
import io
import json
import logging

from plugin_daemon.logs import JsonFormatter, TextFormatter, log_context


def emit(formatter: logging.Formatter, logger: str, message: str, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    record = logging.getLogger(logger).makeRecord(logger, logging.WARNING, "x.py", 7, message, (), None, extra=extra)
    handler.emit(record)
    return stream.getvalue()


def test_json_has_go_s_fields_and_the_ids_of_the_call() -> None:
    def in_a_call() -> str:
        log_context("tester/echo_tool", "session-1")
        return emit(JsonFormatter(), "plugin_daemon.dispatch", "slow answer\nsecond line", waited=3)

    line = contextvars.copy_context().run(in_a_call)
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record["severity"] == "WARNING" and record["service"] == "plugin-daemon"
    assert record["message"] == "slow answer\nsecond line"
    assert (record["plugin_id"], record["session_id"]) == ("tester/echo_tool", "session-1")
    assert record["attributes"] == {"waited": 3}
    assert {"ts", "caller"} <= set(record)

    outside = json.loads(emit(JsonFormatter(), "plugin.author/name", "from the plugin"))
    assert outside["plugin_id"] == "author/name" and "session_id" not in outside


def test_text_is_one_line_however_long() -> None:
    message = "storage root " + "/very-long-folder" * 20
    line = emit(TextFormatter(), "plugin_daemon", message)
    assert line.count("\n") == 1 and message in line
