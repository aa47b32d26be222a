"""The daemon's log: Go's LOG_LEVEL, LOG_OUTPUT_FORMAT and LOG_FILE.

``text`` is one line per record (never wrapped, whatever the terminal); ``json`` is one JSON
object per line with Go's field names (``ts``, ``severity``, ``service``, ``caller``,
``message``), plus ``plugin_id`` and ``session_id`` when the record concerns one. A record names
them with ``extra={"plugin_id": ..., "session_id": ...}``, by a logger named
``plugin.<author/name>``, or by running inside a call (:func:`log_context`).
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

SERVICE = "plugin-daemon"
#: (plugin_id, session_id) of the call being served in this task, for the log
CALL_CONTEXT: ContextVar[tuple[str, str] | None] = ContextVar("plugin_daemon_call", default=None)
_LEVELS = {"WARN": "WARNING"}
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def log_context(plugin_id: str, session_id: str) -> None:
    """Name the plugin and session of the current task in every record it logs from now on."""
    CALL_CONTEXT.set((plugin_id, session_id))


def _ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    plugin_id = getattr(record, "plugin_id", None)
    session_id = getattr(record, "session_id", None)
    if plugin_id is None and record.name.startswith("plugin."):
        plugin_id = record.name.removeprefix("plugin.")
    if plugin_id is None or session_id is None:
        current = CALL_CONTEXT.get()
        if current is not None:
            plugin_id = plugin_id or current[0]
            session_id = session_id or current[1]
    return plugin_id, session_id


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": _timestamp(record),
            "severity": record.levelname,
            "service": SERVICE,
            "caller": f"{record.name}:{record.lineno}",
            "message": record.getMessage(),
        }
        plugin_id, session_id = _ids(record)
        if plugin_id:
            fields["plugin_id"] = plugin_id
        if session_id:
            fields["session_id"] = session_id
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in fields}
        if extra:
            fields["attributes"] = extra
        if record.exc_info:
            fields["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(fields, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts SEVERITY logger [plugin_id=.. session_id=..] message`` on one line (a traceback follows)."""

    def format(self, record: logging.LogRecord) -> str:
        plugin_id, session_id = _ids(record)
        ids = "".join(f" {k}={v}" for k, v in (("plugin_id", plugin_id), ("session_id", session_id)) if v)
        line = f"{_timestamp(record)} {record.levelname} {record.name}{ids} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RuntimeStartFailure(logging.Filter):
    """A runtime that cannot start (:class:`~plugin_daemon.runtime.RuntimeStartError`) reaches the
    log as the traceback text the ASGI lifespan reports; keep only its message, which says what to do."""

    MARKER = "RuntimeStartError: "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "Traceback" in record.msg and self.MARKER in record.msg:
            record.msg = record.msg.rpartition(self.MARKER)[2].partition("\n")[0].strip()
            record.args = ()
        return True


def _open_log_file(path: Path) -> logging.Handler:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return logging.StreamHandler(os.fdopen(descriptor, "a", encoding="utf-8", buffering=1))


def configure_logging(level: str, output_format: str = "text", log_file: Path | None = None) -> None:
    """Send every record to stderr (and ``log_file``) in the chosen format, replacing any handler."""
    formatter: logging.Formatter = JsonFormatter() if output_format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(_open_log_file(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RuntimeStartFailure())
    logging.basicConfig(level=_LEVELS.get(level.upper(), level.upper()), handlers=handlers, force=True)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own handlers would print in its own format
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
