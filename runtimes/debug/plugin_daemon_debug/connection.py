"""One registered debugging plugin's TCP connection: its sessions, heartbeats and end.

After the registration the socket carries the same lines as a local plugin's stdin and stdout
(protocol.md §2.3): the reader hands every line to a
:class:`~plugin_daemon.protocol.router.SessionRouter`, requests and backwards responses are written
one line at a time under a lock, with a deadline.

A plugin silent for ``PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT`` seconds while its TCP connection
lives is *silent*, not gone: a plugin stopped at a breakpoint sends nothing (every greenlet is
frozen) yet its kernel still answers TCP keepalive. It stays installed and its calls wait. The
connection ends when the plugin closes it (or keepalive finds its host gone), when it has been
silent for ``PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT`` seconds, or when the daemon closes it;
every session still open then gets ``ConnectionClosedError`` at once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from plugin_daemon.protocol.codecs import CodecLink, LineCodec, send_heartbeats
from plugin_daemon.protocol.framing import LineReader
from plugin_daemon.protocol.router import NoteListener, SessionRouter
from plugin_daemon.runtime import PluginUnavailable

from .declaration import DebugPlugin

#: Deadline on one write to a plugin that is not reading its socket.
WRITE_TIMEOUT = 30.0
CLOSED_ERROR = "ConnectionClosedError"
CLOSED_MESSAGE = "Connection closed unexpectedly"
#: TCP keepalive on a registered connection: first probe after this many idle seconds, then one
#: every KEEPALIVE_INTERVAL, KEEPALIVE_PROBES unanswered probes close it (a host that vanished).
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_PROBES = 3
#: While a plugin is silent, how often the watcher looks whether it answers again.
SILENT_POLL = 0.5


def enable_keepalive(stream: SocketStream) -> None:
    """Let the kernel find a peer whose host is gone (a paused process still answers probes)."""
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    except anyio.TypedAttributeLookupError:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


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
        silent_drop_timeout: float = 3600.0,
        accepted_at: float | None = None,
        on_note: NoteListener | None = None,
        codec: LineCodec | None = None,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.plugin = plugin
        self.address = address
        self.heartbeat_timeout = heartbeat_timeout
        self.silent_drop_timeout = max(silent_drop_timeout, heartbeat_timeout)
        self.connected_at = time.time()
        #: ``time.monotonic()`` at accept
        self.accepted_at = time.monotonic() if accepted_at is None else accepted_at
        #: seconds from accept to installed (None until it is)
        self.registered_in: float | None = None
        self.last_activity = time.monotonic()
        self.heartbeats = 0
        #: why the connection ended (None while it is open)
        self.ended: str | None = None
        #: a plugin that speaks a codec (line/1) rather than the SDK protocol; None: the SDK's
        self.codec = codec
        self.heartbeat_interval = heartbeat_interval
        self._link = CodecLink(codec, self.write_line) if codec is not None else None
        self.router = SessionRouter(
            plugin.plugin_id,
            self._link.write if self._link is not None else self.write_line,
            max_line=reader.max_size,
            logger=logging.getLogger(f"plugin.{plugin.plugin_id}"),
            on_heartbeat=self._heartbeat,
            on_note=on_note,
        )
        if self._link is not None:
            self._link.router = self.router
        self._write_lock = anyio.Lock()
        enable_keepalive(stream)
        self._scope: anyio.CancelScope | None = None
        self._close_reason: str | None = None
        self._closed_hooks: list[Callable[[DebugConnection], None]] = []
        self._notice_hooks: list[Callable[[int, str], None]] = []
        #: ``time.monotonic()`` when the plugin was found silent (None while it answers)
        self.silent_since: float | None = None

    @property
    def identifier(self) -> str:
        return self.plugin.identifier

    @property
    def alive(self) -> bool:
        return self.ended is None and self._close_reason is None

    @property
    def closed_by_plugin(self) -> bool:
        """The plugin ended the connection itself (the daemon did not close it)."""
        return self.ended is not None and self._close_reason is None

    @property
    def silent_for(self) -> float | None:
        """Seconds the plugin has sent nothing, once that passed the heartbeat timeout (else None)."""
        if self.silent_since is None:
            return None
        return time.monotonic() - self.last_activity

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

    def on_notice(self, hook: Callable[[int, str], None]) -> None:
        """``hook(level, message)`` hears that the plugin went silent or answers again."""
        self._notice_hooks.append(hook)

    def _notice(self, level: int, message: str) -> None:
        for hook in self._notice_hooks:
            hook(level, message)

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
                    if self.codec is not None:
                        beat = self.heartbeat_interval
                        group.start_soon(send_heartbeats, self.codec, self.write_line, beat, lambda: self.alive)
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
        route = self._link.feed if self._link is not None else self.router.feed
        try:
            async for item in self.reader:
                self.last_activity = monotonic()
                route(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _watch_silence(self) -> None:
        timeout = self.heartbeat_timeout
        drop = self.silent_drop_timeout
        while True:
            now = time.monotonic()
            silent_for = now - self.last_activity
            if silent_for >= drop:
                self.close(
                    f"the plugin sent no heartbeat for {silent_for:.0f} s "
                    f"(PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT {drop:g} s)"
                )
                return
            if silent_for >= timeout:
                if self.silent_since is None:
                    self.silent_since = self.last_activity + timeout
                    self._notice(
                        logging.WARNING,
                        f"silent: no heartbeat for {silent_for:.0f} s "
                        f"(PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT {timeout:g} s) while its connection is "
                        f"alive (stopped at a breakpoint?); kept, calls wait, closed after {drop:g} s of silence",
                    )
                await anyio.sleep(min(SILENT_POLL, drop - silent_for))
                continue
            if self.silent_since is not None:
                self._notice(
                    logging.INFO,
                    f"answering again after {self.last_activity - self.silent_since + timeout:.1f} s of silence",
                )
                self.silent_since = None
            await anyio.sleep(timeout - silent_for)
