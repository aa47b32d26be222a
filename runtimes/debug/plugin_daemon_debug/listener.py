"""The debugging TCP listener: admission, the registration under a deadline, then the connection.

Every refusal is one plain-text line (what the SDK prints) and the connection closed:
too many connections (``PLUGIN_REMOTE_INSTALLING_MAX_CONN``, counted from accept, when no connection
is still waiting for its handshake: see ``admission``), no handshake line within
``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_TIMEOUT`` seconds or a longer one than
``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_MAX_SIZE``, a registration not finished within
``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT`` seconds, a line over ``PLUGIN_RUNTIME_MAX_BUFFER_SIZE``,
an unknown key, a workspace at its cap of connections (checked as soon as the key is accepted),
registrations holding too many bytes together, an invalid manifest or declaration.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteReceiveStream, SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from plugin_daemon.memory import give_back_memory
from plugin_daemon.protocol.codecs import codec_for
from plugin_daemon.protocol.codecs.line1 import PROTOCOL as LINE_PROTOCOL
from plugin_daemon.protocol.framing import LineReader, LineTooLong
from plugin_daemon.quickack import QuickAckReceiveStream
from plugin_daemon.runtime import PluginUnavailable, RuntimeStartError

from .admission import BUSY, Admission, Stranger, read_first_line
from .connection import DebugConnection
from .declaration import DebugPlugin, build_plugin
from .handshake import Refused, read_registration
from .line_handshake import auth_failed, auth_success, is_line_auth, read_line_registration

if TYPE_CHECKING:
    from .runtime import DebugRuntime

log = logging.getLogger(__name__)

#: Deadline on telling a refused peer why (and on draining what it still sends).
REFUSAL_WRITE_TIMEOUT = 2.0
#: Most bytes read and dropped from a refused peer before the connection is closed.
REFUSAL_DRAIN_LIMIT = 16 * 1024 * 1024
#: Pause after the operating system refuses an accept (out of file descriptors).
ACCEPT_BACKOFF = 0.1


@dataclass
class _Claims:
    """What one registration holds: a connection slot of its tenant, and bytes of the shared budget."""

    tenant_id: str | None = None
    charged: int = 0
    #: the codec the first line chose (None: the SDK's handshake)
    protocol: str | None = None

    def refusal(self, line: str) -> str:
        """What the peer is told: the SDK's plain line, or a line/1 ``auth_failed`` message."""
        return auth_failed(line) if self.protocol is not None else line


def read_only_when_asked(stream: SocketStream) -> None:
    """Stop the socket from being read ahead of what the listener asks for.

    anyio's asyncio backend reads an accepted socket at once and pauses it only after a ``receive``
    that had to wait: a peer that sends faster than its registration is parsed (or than a refused
    peer is drained) had its whole upload queued in memory. Paused from the start, at most a chunk
    or two is ever read ahead.
    """
    transport = getattr(stream, "_transport", None)  # the asyncio backend's; other backends have none
    pause = getattr(transport, "pause_reading", None)
    if pause is not None:
        pause()


class DebugListener:
    def __init__(self, runtime: DebugRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.open_connections = 0
        self.address: tuple[str, int] | None = None
        #: one scope per accept loop; cancelled when the daemon begins to shut down
        self._accepting: list[anyio.CancelScope] = []
        self._stopped = False
        self.admission = Admission(
            self.settings.PLUGIN_REMOTE_INSTALLING_MAX_HANDSHAKES_PER_ADDRESS,
            self.settings.PLUGIN_REMOTE_INSTALLING_MAX_REGISTERING_BYTES,
        )

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

    def stop_accepting(self) -> None:
        """Close the listening sockets (connections already made go on); the daemon is stopping."""
        self._stopped = True
        for scope in self._accepting:
            scope.cancel()

    async def _accept_loop(self, listener: SocketListener, group: TaskGroup) -> None:
        with anyio.CancelScope() as accepting:
            self._accepting.append(accepting)
            if self._stopped:
                accepting.cancel()
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    log.warning("accepting a debugging connection failed: %s", exc)
                    await anyio.sleep(ACCEPT_BACKOFF)
                    continue
                group.start_soon(self._handle, stream)
                del stream  # not kept (with what it still had buffered) until the next connection comes
        await listener.aclose()  # a plugin connecting now is refused at once
        log.info("the debug listener stopped accepting connections")

    async def _handle(self, stream: SocketStream) -> None:
        accepted = time.monotonic()
        read_only_when_asked(stream)
        self.open_connections += 1
        try:
            address = str(stream.extra(SocketAttribute.remote_address)[0])
        except (OSError, IndexError, TypeError):
            address = "unknown"
        try:
            full = self.open_connections > self.settings.PLUGIN_REMOTE_INSTALLING_MAX_CONN
            stranger = self.admission.arrive(address, full=full)
            if stranger is None:
                await self._refuse(stream, address, BUSY)
                return
            connection = await self._register(stream, address, accepted, stranger)
            if connection is not None:
                await self.runtime.serve_connection(connection)
        except Exception:  # one connection must never take the listener down
            log.exception("debugging connection from %s failed", address)
        finally:
            self.open_connections -= 1
            with anyio.CancelScope(shield=True), anyio.move_on_after(REFUSAL_WRITE_TIMEOUT):
                await stream.aclose()

    async def _register(
        self, stream: SocketStream, address: str, accepted: float, stranger: Stranger
    ) -> DebugConnection | None:
        settings = self.settings
        runtime = self.runtime
        receiver = QuickAckReceiveStream(stream)
        reader = LineReader(receiver, settings.PLUGIN_RUNTIME_MAX_BUFFER_SIZE, strict=True)
        claims = _Claims()
        try:
            outcome = await self._read_plugin(receiver, reader, address, accepted, stranger, claims)
            if isinstance(outcome, str):
                await self._refuse(stream, address, claims.refusal(outcome))
                return None
            if outcome is None:
                return None
            plugin = outcome
            reader.strict = False
            connection = DebugConnection(
                stream,
                reader,
                plugin,
                address,
                heartbeat_timeout=settings.PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT,
                silent_drop_timeout=settings.PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT,
                accepted_at=accepted,
                on_note=lambda level, message: runtime.plugin_note(plugin, level, message),
                codec=codec_for(plugin.protocol)() if plugin.protocol is not None else None,
                heartbeat_interval=settings.PLUGIN_LINE_HEARTBEAT_INTERVAL,
            )
            try:
                await runtime.attach(connection)
            except Refused as exc:
                runtime.note(plugin.tenant_id, plugin.plugin_id, logging.WARNING, f"refused: {exc.line}")
                await self._refuse(stream, address, claims.refusal(exc.line))
                return None
            if plugin.protocol is not None:
                with contextlib.suppress(PluginUnavailable):
                    await connection.write_line(auth_success(uuid.uuid4().hex))
            return connection
        finally:
            if claims.tenant_id is not None:
                runtime.release_registration(claims.tenant_id)
            await self._let_go(claims.charged)  # what it held is freed by now (installed or refused)

    async def _read_plugin(
        self,
        receiver: ByteReceiveStream,
        reader: LineReader,
        address: str,
        accepted: float,
        stranger: Stranger,
        claims: _Claims,
    ) -> DebugPlugin | str | None:
        """The registered plugin, else the line the peer is refused with (None: it is gone).

        Whatever the registration held is let go before the caller writes a refusal.
        """
        settings = self.settings
        runtime = self.runtime
        timeout = settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT

        async def authenticate(key: str) -> str:
            tenant_id = await runtime.authenticate(address, key)
            runtime.reserve_registration(tenant_id)  # the workspace's cap, before anything big is read
            claims.tenant_id = tenant_id
            return tenant_id

        def charge(size: int) -> None:
            self.admission.charge(size)
            claims.charged += size

        try:
            first = await self._handshake_line(receiver, stranger, accepted)
            if is_line_auth(first):  # the first line chooses the protocol (docs/line-protocol.md §9)
                claims.protocol = LINE_PROTOCOL
            reader.feed(first)
            read = read_line_registration if claims.protocol is not None else read_registration
            with anyio.fail_after(max(0.0, timeout - (time.monotonic() - accepted))):
                registration = await read(
                    reader,
                    authenticate,
                    max_assets=settings.PLUGIN_REMOTE_INSTALLING_MAX_ASSETS_SIZE,
                    max_asset_files=settings.MAX_PLUGIN_PACKAGE_ENTRIES,
                    charge=charge,
                )
            return build_plugin(registration)
        except TimeoutError:
            return f"handshake failed, registration not finished within {timeout:g} s"
        except LineTooLong as exc:
            return f"handshake failed, a registration line is longer than {exc.limit} bytes"
        except Refused as exc:
            return exc.line
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            return None
        except Exception:
            log.exception("reading a debugging registration from %s failed", address)
            return "register failed, the daemon could not read the registration"
        finally:
            self.admission.leave(stranger)
            self.admission.release(claims.charged)

    async def _handshake_line(self, receiver: ByteReceiveStream, stranger: Stranger, accepted: float) -> bytes:
        """The first line (and what followed it in the same reads), read while the peer is a stranger."""
        settings = self.settings
        timeout = settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_TIMEOUT
        timeout = min(timeout, settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT)
        with stranger.scope, anyio.move_on_after(max(0.0, timeout - (time.monotonic() - accepted))):
            return await read_first_line(receiver, settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_MAX_SIZE)
        if stranger.evicted is not None:
            raise Refused(stranger.evicted)
        raise Refused(f"handshake failed, no handshake within {timeout:g} s")

    async def _refuse(self, stream: SocketStream, address: str, line: str) -> None:
        """Write the reason, end our side, and let the peer read it before the close.

        Closing a socket with unread input resets the connection, which can destroy the line in
        flight; so what the peer is still sending is read and dropped first (bounded in time and
        size).
        """
        log.info("refused a debugging connection from %s: %s", address, line)
        drained = 0
        with (
            anyio.move_on_after(REFUSAL_WRITE_TIMEOUT),
            contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError),
        ):
            await stream.send(line.encode() + b"\n")
            await stream.send_eof()
            while drained < REFUSAL_DRAIN_LIMIT:
                drained += len(await stream.receive())
        await self._let_go(drained)

    async def _let_go(self, size: int) -> None:
        """``size`` bytes were read and dropped: now and then, give the freed memory back."""
        if self.admission.let_go(size):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(give_back_memory)
