"""One registered debugging plugin's TCP connection: its sessions, heartbeats and end.

After the registration the socket carries the same lines as a local plugin's stdin and stdout
(protocol.md §2.3): the reader hands every line to a
:class:`~plugin_daemon.protocol.router.SessionRouter`, requests and backwards responses are written
one line at a time under a lock, with a deadline. The connection ends when the plugin closes it,
when it has been silent for ``PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT`` seconds, or when the
daemon closes it; every session still open then gets ``ConnectionClosedError`` at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from plugin_daemon.protocol.framing import LineReader
from plugin_daemon.protocol.router import NoteListener, SessionRouter
from plugin_daemon.runtime import PluginUnavailable

from .declaration import DebugPlugin

#: Deadline on one write to a plugin that is not reading its socket.
WRITE_TIMEOUT = 30.0
CLOSED_ERROR = "ConnectionClosedError"
CLOSED_MESSAGE = "Connection closed unexpectedly"


class DebugConnection:
    """A plugin under development, connected and registered."""

    def __init__(
        self,
        stream: SocketStream,
        reader: LineReader,
        plugin: DebugPlugin,
        address: str,
        *,
        heartbeat_timeout: float,
        accepted_at: float | None = None,
        on_note: NoteListener | None = None,
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.plugin = plugin
        self.address = address
        self.heartbeat_timeout = heartbeat_timeout
        self.connected_at = time.time()
        #: ``time.monotonic()`` at accept
        self.accepted_at = time.monotonic() if accepted_at is None else accepted_at
        #: seconds from accept to installed (None until it is)
        self.registered_in: float | None = None
        self.last_activity = time.monotonic()
        self.heartbeats = 0
        #: why the connection ended (None while it is open)
        self.ended: str | None = None
        self.router = SessionRouter(
            plugin.plugin_id,
            self.write_line,
            max_line=reader.max_size,
            logger=logging.getLogger(f"plugin.{plugin.plugin_id}"),
            on_heartbeat=self._heartbeat,
            on_note=on_note,
        )
        self._write_lock = anyio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._close_reason: str | None = None
        self._closed_hooks: list[Callable[[DebugConnection], None]] = []

    @property
    def identifier(self) -> str:
        return self.plugin.identifier

    @property
    def alive(self) -> bool:
        return self.ended is None and self._close_reason is None

    def _heartbeat(self) -> None:
        self.heartbeats += 1

    # --- writing --------------------------------------------------------------------------

    async def write_line(self, line: bytes) -> None:
        """Send one line (a newline is added); raise PluginUnavailable when the plugin is gone."""
        if not self.alive:
            raise PluginUnavailable("absent", f"debugging plugin {self.plugin.plugin_id} has disconnected")
        try:
            async with self._write_lock:
                with anyio.fail_after(WRITE_TIMEOUT):
                    await self.stream.send(line + b"\n")
        except TimeoutError:
            reason = f"the plugin has not read its connection for {WRITE_TIMEOUT:g} s"
            self.close(reason)
            raise PluginUnavailable("unresponsive", f"debugging plugin {self.plugin.plugin_id}: {reason}") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.close("the connection broke while writing")
            raise PluginUnavailable("absent", f"debugging plugin {self.plugin.plugin_id} has disconnected") from None

    # --- life -----------------------------------------------------------------------------

    def on_closed(self, hook: Callable[[DebugConnection], None]) -> None:
        """``hook(connection)`` runs synchronously as soon as the connection is found gone."""
        self._closed_hooks.append(hook)

    def close(self, reason: str) -> None:
        """End the connection now (from any task); ``reason`` goes into the sessions' error."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> str:
        """Serve the connection until it ends; returns why it ended."""
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._close_reason is not None:
                    scope.cancel()
                async with anyio.create_task_group() as group:
                    group.start_soon(self._watch_silence)
                    await self._read()
                    group.cancel_scope.cancel()
        finally:
            self.ended = self._close_reason or "the plugin closed the connection"
            message = CLOSED_MESSAGE if self._close_reason is None else f"{CLOSED_MESSAGE}: {self._close_reason}"
            for hook in self._closed_hooks:
                hook(self)
            self.router.fail_all(CLOSED_ERROR, message)
        return self.ended

    async def _read(self) -> None:
        monotonic = time.monotonic
        route = self.router.feed
        try:
            async for item in self.reader:
                self.last_activity = monotonic()
                route(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _watch_silence(self) -> None:
        timeout = self.heartbeat_timeout
        while True:
            silent_for = time.monotonic() - self.last_activity
            if silent_for >= timeout:
                self.close(
                    f"the plugin sent no heartbeat for {silent_for:.0f} s "
                    f"(PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT {timeout:g} s)"
                )
                return
            await anyio.sleep(timeout - silent_for)
