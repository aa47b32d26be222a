"""One session's channel over a plugin connection (a process's stdio, a TCP socket).

The connection's single output reader pushes each frame into the session's queue synchronously
(see :mod:`plugin_daemon.protocol.router`); the caller iterates at its own pace. The reader never
waits for a consumer. Buffer policy:
a session may hold up to ``MAX_BUFFERED_BYTES`` of frames (counted as line bytes) or
``MAX_BUFFERED_FRAMES`` frames that its caller has not read yet; past that, the caller is not
keeping up, so the session is failed (``PluginSessionOverflow``), its buffered frames are
dropped and later frames are discarded. Other sessions, and the plugin, are unaffected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from plugin_daemon.protocol.messages import error_payload
from plugin_daemon.runtime import EventKind, SessionChannel, SessionEvent

MAX_BUFFERED_BYTES = 64 * 1024 * 1024
MAX_BUFFERED_FRAMES = 50_000

_END = EventKind.END
_ERROR = EventKind.ERROR


class QueueSessionChannel(SessionChannel):
    """Events of one session, queued by the connection's output reader."""

    __slots__ = ("session_id", "_write", "_detach", "_queue", "_bytes", "_waiter", "_closed", "_finished")

    def __init__(
        self,
        session_id: str,
        write: Callable[[bytes], Awaitable[None]],
        detach: Callable[[str], None],
    ) -> None:
        self.session_id = session_id
        self._write = write
        self._detach = detach
        self._queue: deque[tuple[SessionEvent, int]] = deque()
        self._bytes = 0
        self._waiter: anyio.Event | None = None
        self._closed = False  # the caller stopped listening
        self._finished = False  # a terminal event was queued; nothing more is accepted

    # --- producer side (the output reader; synchronous, never blocks) -----------------------

    def deliver(self, event: SessionEvent, size: int) -> bool:
        """Queue one event; True when the session is over (terminal event, or overflow)."""
        if self._finished:
            return True
        terminal = event.kind is _END or event.kind is _ERROR
        self._queue.append((event, size))
        self._bytes += size
        if terminal:
            self._finished = True
        elif self._bytes > MAX_BUFFERED_BYTES or len(self._queue) > MAX_BUFFERED_FRAMES:
            self._queue.clear()
            self._bytes = 0
            self.fail(
                "PluginSessionOverflow",
                f"session {self.session_id}: the caller read the plugin's output too slowly "
                f"(over {MAX_BUFFERED_BYTES // (1024 * 1024)} MiB or {MAX_BUFFERED_FRAMES} messages waiting); "
                "the session was stopped",
            )
            return True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()
        return terminal

    def fail(self, error_type: str, message: str, args: dict[str, Any] | None = None) -> None:
        """End the session with an error event (unless it already ended)."""
        if self._finished:
            return
        self._finished = True
        self._queue.append((SessionEvent(_ERROR, error_payload(error_type, message, args)), 0))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    # --- consumer side ----------------------------------------------------------------------

    def __aiter__(self) -> QueueSessionChannel:
        return self

    async def __anext__(self) -> SessionEvent:
        queue = self._queue
        while not queue:
            if self._closed or self._finished:
                raise StopAsyncIteration
            waiter = self._waiter = anyio.Event()
            await waiter.wait()
        event, size = queue.popleft()
        self._bytes -= size
        if event.kind is _END or event.kind is _ERROR:
            self._closed = True  # terminal: the iteration stops after this event
        return event

    def has_pending(self) -> bool:
        """True when the next event is already queued (iterating will not wait for the plugin)."""
        return bool(self._queue)

    async def send(self, line: bytes) -> None:
        await self._write(line)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._bytes = 0
            self._detach(self.session_id)
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                waiter.set()
