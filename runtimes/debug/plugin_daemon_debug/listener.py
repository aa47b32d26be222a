"""The debugging TCP listener: admission, the registration under a deadline, then the connection.

Every refusal is one plain-text line (what the SDK prints) and the connection closed:
too many connections (``PLUGIN_REMOTE_INSTALLING_MAX_CONN``, counted from accept), a registration
not finished within ``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT`` seconds, a line over
``PLUGIN_RUNTIME_MAX_BUFFER_SIZE``, an unknown key (and, after too many of those from one address,
any key from it for a while), an invalid manifest or declaration.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from plugin_daemon.protocol.framing import LineReader, LineTooLong
from plugin_daemon.quickack import QuickAckReceiveStream
from plugin_daemon.runtime import RuntimeStartError

from .connection import DebugConnection
from .declaration import build_plugin
from .handshake import Refused, read_registration

if TYPE_CHECKING:
    from .runtime import DebugRuntime

log = logging.getLogger(__name__)

BUSY = "server is busy now, please try again later"
#: Deadline on telling a refused peer why (and on draining what it still sends).
REFUSAL_WRITE_TIMEOUT = 2.0
#: Most bytes read and dropped from a refused peer before the connection is closed.
REFUSAL_DRAIN_LIMIT = 16 * 1024 * 1024
#: Pause after the operating system refuses an accept (out of file descriptors).
ACCEPT_BACKOFF = 0.1


class DebugListener:
    def __init__(self, runtime: DebugRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.open_connections = 0
        self.address: tuple[str, int] | None = None

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        """Listen until cancelled. A port that cannot be bound stops the daemon's start."""
        host = self.settings.PLUGIN_REMOTE_INSTALLING_HOST
        port = self.settings.PLUGIN_REMOTE_INSTALLING_PORT
        try:
            multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            self.runtime.listen_error = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise RuntimeStartError(
                f"the debug listener {self.runtime.listen_error}; set PLUGIN_REMOTE_INSTALLING_PORT to a free "
                "port, or PLUGIN_REMOTE_INSTALLING_ENABLED=false"
            ) from None
        async with multi, anyio.create_task_group() as group:
            first = multi.listeners[0].extra(SocketAttribute.local_address)
            self.address = (str(first[0]), int(first[1]))
            log.info("debugging plugins connect to %s:%d", *self.address)
            for listener in multi.listeners:
                assert isinstance(listener, SocketListener)
                group.start_soon(self._accept_loop, listener, group)
            task_status.started()

    async def _accept_loop(self, listener: SocketListener, group: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                log.warning("accepting a debugging connection failed: %s", exc)
                await anyio.sleep(ACCEPT_BACKOFF)
                continue
            group.start_soon(self._handle, stream)

    async def _handle(self, stream: SocketStream) -> None:
        accepted = time.monotonic()
        self.open_connections += 1
        try:
            address = str(stream.extra(SocketAttribute.remote_address)[0])
        except (OSError, IndexError, TypeError):
            address = "unknown"
        try:
            if self.open_connections > self.settings.PLUGIN_REMOTE_INSTALLING_MAX_CONN:
                await self._refuse(stream, address, BUSY)
                return
            connection = await self._register(stream, address, accepted)
            if connection is not None:
                await self.runtime.serve_connection(connection)
        except Exception:  # one connection must never take the listener down
            log.exception("debugging connection from %s failed", address)
        finally:
            self.open_connections -= 1
            with anyio.CancelScope(shield=True), anyio.move_on_after(REFUSAL_WRITE_TIMEOUT):
                await stream.aclose()

    async def _register(self, stream: SocketStream, address: str, accepted: float) -> DebugConnection | None:
        settings = self.settings
        runtime = self.runtime
        reader = LineReader(QuickAckReceiveStream(stream), settings.PLUGIN_RUNTIME_MAX_BUFFER_SIZE, strict=True)
        timeout = settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT
        try:
            with anyio.fail_after(timeout):
                registration = await read_registration(
                    reader,
                    lambda key: runtime.authenticate(address, key),
                    max_assets=settings.PLUGIN_REMOTE_INSTALLING_MAX_ASSETS_SIZE,
                    max_asset_files=settings.MAX_PLUGIN_PACKAGE_ENTRIES,
                )
            plugin = build_plugin(registration)
        except TimeoutError:
            await self._refuse(stream, address, f"handshake failed, registration not finished within {timeout:g} s")
            return None
        except LineTooLong as exc:
            await self._refuse(
                stream, address, f"handshake failed, a registration line is longer than {exc.limit} bytes"
            )
            return None
        except Refused as exc:
            await self._refuse(stream, address, exc.line)
            return None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return None
        reader.strict = False
        connection = DebugConnection(
            stream,
            reader,
            plugin,
            address,
            heartbeat_timeout=settings.PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT,
            accepted_at=accepted,
            on_note=lambda level, message: runtime.plugin_note(plugin, level, message),
        )
        try:
            await runtime.attach(connection)
        except Refused as exc:
            runtime.note(plugin.tenant_id, plugin.plugin_id, logging.WARNING, f"refused: {exc.line}")
            await self._refuse(stream, address, exc.line)
            return None
        return connection

    async def _refuse(self, stream: SocketStream, address: str, line: str) -> None:
        """Write the reason, end our side, and let the peer read it before the close.

        Closing a socket with unread input resets the connection, which can destroy the line in
        flight; so what the peer is still sending is read and dropped first (bounded in time and
        size).
        """
        log.info("refused a debugging connection from %s: %s", address, line)
        with (
            anyio.move_on_after(REFUSAL_WRITE_TIMEOUT),
            contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError),
        ):
            await stream.send(line.encode() + b"\n")
            await stream.send_eof()
            drained = 0
            while drained < REFUSAL_DRAIN_LIMIT:
                drained += len(await stream.receive())
