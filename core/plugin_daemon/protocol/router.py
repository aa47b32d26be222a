"""Routing one plugin connection's output to its sessions, whatever carries the bytes.

A runtime feeds every line its reader gets (from a process's stdout, from a TCP socket) to a
:class:`SessionRouter`, synchronously and in order. The router classifies the line once and:

- queues session frames into the session's :class:`QueueSessionChannel` (by ``session_id``);
- reports heartbeats to ``on_heartbeat``;
- writes the plugin's log records to ``logger`` at their level, and what is wrong with the
  output (unreadable lines, plugin-wide errors, oversize lines) as warnings; ``on_note``, when
  given, hears the same records; ``on_unreadable``, when given, takes the lines that are not
  protocol frames instead (a runtime that logs them in batches and keeps their tail);
- fails only the session an oversize line belonged to.

When the connection goes, :meth:`SessionRouter.fail_all` ends every open session with an error at
once. Requests go the other way through the ``write`` callback the runtime gives.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from plugin_daemon.protocol.channels import QueueSessionChannel
from plugin_daemon.protocol.framing import OversizeLine
from plugin_daemon.protocol.messages import (
    Heartbeat,
    LogFrame,
    ManifestEcho,
    ProcessError,
    SessionFrame,
    Unreadable,
    parse_output_line,
    split_joined_frames,
)
from plugin_daemon.runtime import SessionEvent

#: Writes one line (without its newline) to the plugin.
Writer = Callable[[bytes], Awaitable[None]]
#: Hears a log record about the plugin: (logging level, message).
NoteListener = Callable[[int, str], None]
#: Takes the text of one output line that is not a protocol frame.
UnreadableListener = Callable[[str], None]

LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}


class SessionRouter:
    """The open sessions of one plugin connection, and the routing of its output lines.

    :param plugin_id: ``author/name``, for messages.
    :param write: sends one request or backwards-response line to the plugin.
    :param max_line: the line limit the reader enforces (named in oversize errors).
    :param logger: where the plugin's log records and output problems are logged.
    :param on_heartbeat: called on every heartbeat.
    :param on_note: also hears every record written to ``logger``.
    :param on_unreadable: takes the lines that are not protocol frames (instead of a warning each).
    """

    __slots__ = ("plugin_id", "write", "max_line", "logger", "on_heartbeat", "on_note", "on_unreadable", "sessions")

    def __init__(
        self,
        plugin_id: str,
        write: Writer,
        *,
        max_line: int,
        logger: logging.Logger,
        on_heartbeat: Callable[[], None] | None = None,
        on_note: NoteListener | None = None,
        on_unreadable: UnreadableListener | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.write = write
        self.max_line = max_line
        self.logger = logger
        self.on_heartbeat = on_heartbeat
        self.on_note = on_note
        self.on_unreadable = on_unreadable
        self.sessions: dict[str, QueueSessionChannel] = {}

    # --- requests -------------------------------------------------------------------------

    async def open_session(self, session_id: str, request_line: bytes) -> QueueSessionChannel:
        """Register the session, then write its request line; the channel carries the answer."""
        if session_id in self.sessions:
            raise ValueError(f"session {session_id} is already open")
        channel = QueueSessionChannel(session_id, self.write, self._detach)
        self.sessions[session_id] = channel
        try:
            await self.write(request_line)
        except BaseException:
            self.sessions.pop(session_id, None)
            raise
        return channel

    def _detach(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def fail_all(self, error_type: str, message: str) -> None:
        """End every open session with an ``error`` event now (the connection is gone)."""
        if not self.sessions:
            return
        sessions, self.sessions = self.sessions, {}
        for channel in sessions.values():
            channel.fail(error_type, message)

    # --- output ---------------------------------------------------------------------------

    def feed(self, item: bytes | OversizeLine) -> None:
        """Route one item of the connection's :class:`~plugin_daemon.protocol.framing.LineReader`."""
        if isinstance(item, OversizeLine):
            self._oversize(item)
            return
        frame = parse_output_line(item)
        if isinstance(frame, Unreadable):
            joined = split_joined_frames(item)
            if joined:
                for piece in joined:
                    self.feed(piece)
                return
        if isinstance(frame, SessionFrame):
            self._route(frame, len(item))
        elif isinstance(frame, Heartbeat):
            if self.on_heartbeat is not None:
                self.on_heartbeat()
        elif isinstance(frame, LogFrame):
            self._note(LOG_LEVELS.get(frame.level.upper(), logging.INFO), frame.message)
        elif isinstance(frame, ProcessError):
            self._note(logging.WARNING, f"plugin error (session {frame.session_id}): {frame.data}")
        elif isinstance(frame, ManifestEcho):
            self.logger.debug("plugin printed its manifest")
        elif isinstance(frame, Unreadable):
            if self.on_unreadable is not None:
                self.on_unreadable(frame.text)
            else:
                self._note(logging.WARNING, f"unreadable output line: {frame.text}")
        else:
            self.logger.debug("ignored output %r", frame)

    def _note(self, level: int, message: str) -> None:
        self.logger.log(level, "%s", message)
        if self.on_note is not None:
            self.on_note(level, message)

    def _route(self, frame: SessionFrame, size: int) -> None:
        session_id = frame.session_id
        channel = self.sessions.get(session_id) if session_id is not None else None
        if channel is None:
            return  # after its end/error, or its caller closed it
        if frame.kind is None:
            del self.sessions[channel.session_id]
            channel.fail(
                "unknown_stream_message_type",
                f"plugin {self.plugin_id} sent a session message of unknown type {frame.type!r}",
            )
        elif channel.deliver(SessionEvent(frame.kind, frame.payload), size):
            del self.sessions[channel.session_id]

    def _oversize(self, item: OversizeLine) -> None:
        channel = self.sessions.pop(item.session_id, None) if item.session_id else None
        if channel is None:
            self._note(
                logging.WARNING,
                f"dropped a {item.size}-byte line over PLUGIN_RUNTIME_MAX_BUFFER_SIZE ({self.max_line} bytes) "
                f"for no open session ({item.session_id})",
            )
            return
        self._note(logging.WARNING, f"session {item.session_id}: dropped a {item.size}-byte message (over the limit)")
        channel.fail(
            "PluginFrameTooLarge",
            f"plugin {self.plugin_id} sent a {item.size}-byte message on session {item.session_id}, which "
            f"exceeded PLUGIN_RUNTIME_MAX_BUFFER_SIZE ({self.max_line} bytes); the session was stopped, "
            "the plugin keeps running",
            {"size": item.size, "limit": self.max_line},
        )
