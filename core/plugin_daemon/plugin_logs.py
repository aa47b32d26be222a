"""The live log of plugins that serve every tenant (local, serverless), in the log book.

``/plugin/{tenant_id}/debugging/logs?plugin_id=`` shows debugging plugins' logs (the debug runtime
writes those itself) and, through :class:`PluginLogFeed`, what other plugins do:

- their output: the records of the ``plugin.<author/name>`` loggers (stderr lines, stray stdout);
- the daemon's records about them that name them (``extra={"plugin_id": ...}``: restarts, failed
  launches, memory limits);
- each call with its outcome and duration, while anyone watches (no cost otherwise).

Output and restarts are the plugin's, shared by every tenant (:data:`ANY_TENANT`); a call belongs
to the tenant that made it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from plugin_daemon.logbook import ANY_TENANT, LogBook
from plugin_daemon.sessions import Session, SessionManager

#: the debug runtime keeps its plugins' logs itself, by tenant
DEBUG_RUNTIME = "remote"


class PluginLogFeed(logging.Handler):
    """A logging handler (on the root logger while the daemon runs) feeding the log book."""

    def __init__(self, book: LogBook, sessions: SessionManager, is_debugging: Callable[[str], bool]) -> None:
        super().__init__(logging.INFO)
        self.book = book
        self.sessions = sessions
        self.is_debugging = is_debugging
        self._thread: int | None = None

    def attach(self) -> None:
        """Start feeding (call it in the event loop's thread: the log book is not thread-safe)."""
        self._thread = threading.get_ident()
        logging.getLogger().addHandler(self)
        self.book.on_watched = self._watched

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)
        self.book.on_watched = None
        self.sessions.on_end = None

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() != self._thread:
            return  # a record of a worker thread: the log book belongs to the event loop
        plugin_id = getattr(record, "plugin_id", None)
        from_plugin = record.name.startswith("plugin.")
        if plugin_id is None and from_plugin:
            plugin_id = record.name.removeprefix("plugin.")
        if not isinstance(plugin_id, str) or not plugin_id or self.is_debugging(plugin_id):
            return
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging system's business, not the log book's
            return
        self.book.add(ANY_TENANT, plugin_id, record.levelno, message, "plugin" if from_plugin else "daemon")

    def _watched(self, watched: bool) -> None:
        self.sessions.on_end = self.call_ended if watched else None

    def call_ended(self, session: Session) -> None:
        if session.runtime_type == DEBUG_RUNTIME:
            return
        outcome = "failed" if session.state == "failed" else session.outcome
        took = (time.monotonic() - session.created_at) * 1000
        level = logging.INFO if outcome == "success" else logging.WARNING
        message = f"call {session.access_type}/{session.action} (session {session.id}): {outcome} in {took:.0f} ms"
        self.book.add(session.tenant_id, session.plugin_id, level, message, "daemon")
