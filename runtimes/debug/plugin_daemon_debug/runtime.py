"""``DebugRuntime``: plugins under development, connected over TCP (installation runtime ``remote``).

A plugin that registers is installed for its key's tenant at once and routed to; when its
connection goes, its sessions fail at once and the installation goes away. Several connections
of one plugin for one tenant may be open (a developer starts a second copy, or a restarted
plugin reconnects before the old connection is noticed gone): the newest one is installed and
answers; when it goes, the newest remaining one takes over. Registry changes and the database
writes that follow them are serialised by one lock, so a fast reconnect never races a slow
cleanup.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from anyio.abc import TaskStatus
from plugin_daemon.logbook import LogBook
from plugin_daemon.runtime import InstanceState, PluginSpec, PluginUnavailable, Runtime, SessionChannel, SessionEvent

from .connection import DebugConnection
from .declaration import DebugPlugin
from .handshake import Refused
from .keys import DebuggingKeys
from .limits import FailedAuthLimiter
from .listener import DebugListener
from .reloads import ReloadGrace, Returning
from .tracing import SessionTrace, TracedChannel, Tracer

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: Deadline on the database work done when a connection ends during shutdown.
CLEANUP_TIMEOUT = 10.0

PluginKey = tuple[str, str]  # (tenant id, plugin id)


class DebugRuntime(Runtime):
    """Runs nothing itself: debugging plugins run on the developer's machine and connect here."""

    name: ClassVar[str] = "remote"
    #: installations of this runtime come back by reconnecting, never by a relaunch
    relaunch_on_start: ClassVar[bool] = False

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.settings = daemon.settings
        self.manager = daemon.manager
        self.keys = DebuggingKeys(daemon.database, self.settings.PLUGIN_REMOTE_INSTALLING_KEY_TTL)
        self.limiter = FailedAuthLimiter(
            self.settings.PLUGIN_REMOTE_INSTALLING_MAX_FAILED_KEYS,
            self.settings.PLUGIN_REMOTE_INSTALLING_FAILED_KEYS_WINDOW,
        )
        self.logs: LogBook = daemon.logbook  # shared: the same route shows local plugins' logs
        self.tracer = Tracer()
        self.listener = DebugListener(self)
        self.listen_error: str | None = None
        self._by_plugin: dict[PluginKey, list[DebugConnection]] = {}  # oldest first
        self._routes: dict[str, DebugConnection] = {}  # identifier → newest live connection
        self._registering: dict[str, int] = {}  # tenant → registrations being read (key accepted)
        self._lock = anyio.Lock()
        self.reloads = ReloadGrace(self.settings.PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE)

    # --- lifetime -------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._purge_stale_installations()
        await anyio.to_thread.run_sync(self.keys.purge_expired)
        if not self.settings.PLUGIN_REMOTE_INSTALLING_ENABLED:
            log.info("the debugging listener is off (PLUGIN_REMOTE_INSTALLING_ENABLED=false)")
            task_status.started()
            await anyio.sleep_forever()
        self.daemon.shutdown.on_begin(self.listener.stop_accepting)  # before the HTTP server stops
        await self.listener.serve(task_status=task_status)

    async def _purge_stale_installations(self) -> None:
        """Debugging installations left by a daemon that stopped without cleaning up."""
        stale = await anyio.to_thread.run_sync(self.manager.installations_of_runtime, self.name)
        for installation in stale:
            await anyio.to_thread.run_sync(self.manager.uninstall, installation.tenant_id, installation.id)
            await anyio.to_thread.run_sync(self.manager.drop_unused_declaration, installation.identifier)
        if stale:
            log.info("removed %d debugging installation(s) left by the last run", len(stale))

    async def aclose(self) -> None:
        for connection in list(self._routes.values()):
            connection.close("the daemon is shutting down")

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the listener listens (``None`` when it does not)."""
        return self.listener.address

    # --- registration -----------------------------------------------------------------------

    async def authenticate(self, address: str, key: str) -> str:
        """The tenant of ``key``; refused when unknown.

        A valid key is accepted whatever its address did before: on a shared host (or behind a
        NAT) one process guessing keys must not lock every developer out. An address that failed
        too often is told to stop, and its failures keep counting.
        """
        tenant_id = await anyio.to_thread.run_sync(self.keys.tenant_of, key)
        if tenant_id is not None:
            return tenant_id
        wait = self.limiter.retry_after(address)
        self.limiter.failed(address)
        if wait:
            raise Refused(
                f"handshake failed, too many invalid keys from {address}; try again in {max(1, math.ceil(wait))} s"
            )
        raise Refused("handshake failed, invalid key")

    def _tenant_cap_line(self) -> str:
        cap = self.settings.PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN
        return (
            f"too many debugging connections for this workspace (at most {cap}, "
            "PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN); stop another debugging plugin first"
        )

    def reserve_registration(self, tenant_id: str) -> None:
        """Hold one of the tenant's connections for a registration about to be read; refused at the
        cap (its connections plus its registrations being read), before the registration is read."""
        registered = sum(len(conns) for (tenant, _), conns in self._by_plugin.items() if tenant == tenant_id)
        registering = self._registering.get(tenant_id, 0)
        if registered + registering >= self.settings.PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN:
            raise Refused(self._tenant_cap_line())
        self._registering[tenant_id] = registering + 1

    def release_registration(self, tenant_id: str) -> None:
        """The registration is attached (and counted as a connection now) or has failed."""
        left = self._registering.get(tenant_id, 0) - 1
        if left > 0:
            self._registering[tenant_id] = left
        else:
            self._registering.pop(tenant_id, None)

    async def attach(self, connection: DebugConnection) -> None:
        """Route to a registered connection and install its plugin for its tenant."""
        plugin = connection.plugin
        key = (plugin.tenant_id, plugin.plugin_id)
        async with self._lock:
            cap = self.settings.PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN
            in_tenant = sum(len(conns) for (tenant, _), conns in self._by_plugin.items() if tenant == plugin.tenant_id)
            if in_tenant >= cap:
                raise Refused(self._tenant_cap_line())
            existing = await anyio.to_thread.run_sync(self.manager.installation, *key)
            if existing is not None and existing.runtime_type != self.name:
                raise Refused(
                    f"register failed, plugin {plugin.plugin_id} is already installed in this workspace "
                    f"(runtime {existing.runtime_type}); uninstall it there before debugging it"
                )
            replaced = [other for other in self._by_plugin.get(key, []) if other.alive]
            self._by_plugin.setdefault(key, []).append(connection)
            self._routes[plugin.identifier] = connection
            connection.on_closed(self._unroute)
            connection.on_notice(lambda level, message: self.note(plugin.tenant_id, plugin.plugin_id, level, message))
            try:
                await anyio.to_thread.run_sync(self._install, plugin)
                connection.registered_in = time.monotonic() - connection.accepted_at
            except Exception as exc:
                self._unroute(connection)
                self._forget(connection)
                log.exception("installing debugging plugin %s failed", plugin.identifier)
                raise Refused(f"register failed, the daemon could not install the plugin: {exc}") from exc
            returning = self.reloads.arrived(connection)
            if returning is not None:
                took = time.monotonic() - returning.left_at
                changed = "" if returning.identifier == plugin.identifier else ", its declarations changed"
                self._reloaded(connection, f"{plugin.plugin_id} reloaded in {took:.1f} s{changed}")
            elif replaced:
                self._reloaded(connection, f"{plugin.plugin_id} reloaded: a new copy took over from the running one")

    def _reloaded(self, connection: DebugConnection, message: str) -> None:
        plugin = connection.plugin
        log.info("debugging plugin %s (tenant %s): %s", plugin.plugin_id, plugin.tenant_id, message)
        event: dict[str, object] = {"type": "reload", "status": "success"}
        self.logs.add(plugin.tenant_id, plugin.plugin_id, logging.INFO, message, "daemon", event)

    def _install(self, plugin: DebugPlugin) -> None:
        for media_id, content in plugin.media.items():
            self.manager.media.put(media_id, content)
        plugin.media.clear()  # kept in the media store now (it is never emptied): not in memory too
        self.manager.register_declaration(plugin.identifier, plugin.declaration)
        # a replaced debugging copy needs no retiring: its connection is routed (or gone) already
        self.manager.install(plugin.tenant_id, plugin.identifier, runtime_type=self.name, source="remote")

    async def serve_connection(self, connection: DebugConnection) -> None:
        """Serve a registered connection until it ends, then clean up after it."""
        plugin = connection.plugin
        took = f" in {connection.registered_in * 1000:.0f} ms" if connection.registered_in is not None else ""
        self.note(
            plugin.tenant_id,
            plugin.plugin_id,
            logging.INFO,
            f"connected from {connection.address} as {plugin.identifier}, installed{took}",
        )
        try:
            reason = await connection.run()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self.detach(connection)
        self.note(plugin.tenant_id, plugin.plugin_id, logging.INFO, f"disconnected: {reason}")

    def _unroute(self, connection: DebugConnection) -> None:
        """Stop sending new sessions to a connection that is gone (synchronous, at once)."""
        identifier = connection.identifier
        if self._routes.get(identifier) is not connection:
            return
        del self._routes[identifier]
        key = (connection.plugin.tenant_id, connection.plugin.plugin_id)
        for other in reversed(self._by_plugin.get(key, [])):
            if other is not connection and other.alive and other.identifier == identifier:
                self._routes[identifier] = other
                return

    def _forget(self, connection: DebugConnection) -> list[DebugConnection]:
        key = (connection.plugin.tenant_id, connection.plugin.plugin_id)
        connections = self._by_plugin.get(key, [])
        if connection in connections:
            connections.remove(connection)
        if not connections:
            self._by_plugin.pop(key, None)
        return connections

    async def detach(self, connection: DebugConnection) -> None:
        """The connection is gone: uninstall its plugin, or install the newest copy still connected."""
        self._unroute(connection)
        plugin = connection.plugin
        async with self._lock:
            remaining = self._forget(connection)
            installation = await anyio.to_thread.run_sync(self.manager.installation, plugin.tenant_id, plugin.plugin_id)
            if installation is None or installation.runtime_type != self.name:
                return
            if remaining:
                newest = remaining[-1]
                if installation.identifier != newest.identifier:
                    self._routes[newest.identifier] = newest
                    await anyio.to_thread.run_sync(self._install, newest.plugin)
                return
            grace = self.reloads.grace
            if grace > 0 and connection.closed_by_plugin and not self.daemon.shutdown.draining:
                record = self.reloads.leaving(plugin.tenant_id, plugin.plugin_id, installation.identifier)
                self.note(
                    plugin.tenant_id,
                    plugin.plugin_id,
                    logging.INFO,
                    f"left; kept installed and calls wait up to {grace:g} s for it to come back "
                    "(PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE)",
                )
                self.daemon.task_group.start_soon(self._end_grace, record)
                return
            await self._uninstall(plugin.tenant_id, installation.id, installation.identifier)

    async def _uninstall(self, tenant_id: str, installation_id: str, identifier: str) -> None:
        await anyio.to_thread.run_sync(self.manager.uninstall, tenant_id, installation_id)
        # no stale spec or declaration of a gone identity (each change of a manifest is a new one)
        await anyio.to_thread.run_sync(self.manager.drop_unused_declaration, identifier)

    async def _end_grace(self, record: Returning) -> None:
        """After the grace: uninstall a plugin that did not come back (or drop its old identity)."""
        await anyio.sleep(max(0.0, record.deadline - time.monotonic()))
        async with self._lock:
            if not self.reloads.forget(record):
                if record.successor is not None and record.successor.identifier != record.identifier:
                    await anyio.to_thread.run_sync(self.manager.drop_unused_declaration, record.identifier)
                return
            if self._by_plugin.get((record.tenant_id, record.plugin_id)):
                return  # connected again meanwhile (and installed by attach)
            installation = await anyio.to_thread.run_sync(self.manager.installation, record.tenant_id, record.plugin_id)
            if installation is None or installation.runtime_type != self.name:
                return
            message = f"{record.plugin_id} did not come back within {self.reloads.grace:g} s: uninstalled"
            failed: dict[str, object] = {"type": "reload", "status": "failed"}
            self.logs.add(record.tenant_id, record.plugin_id, logging.WARNING, message, "daemon", failed)
            await self._uninstall(record.tenant_id, installation.id, installation.identifier)

    # --- logs and traces --------------------------------------------------------------------

    def note(self, tenant_id: str, plugin_id: str, level: int, message: str) -> None:
        """A daemon-side record about a debugging plugin: its log book and the daemon's log."""
        log.log(level, "debugging plugin %s (tenant %s): %s", plugin_id, tenant_id, message)
        self.logs.add(tenant_id, plugin_id, level, message, "daemon")

    def plugin_note(self, plugin: DebugPlugin, level: int, message: str) -> None:
        """A record from (or about the output of) a plugin: its log book (the router logs it too)."""
        self.logs.add(plugin.tenant_id, plugin.plugin_id, level, message, "plugin")

    def _session_ended(self, tenant_id: str) -> Callable[[SessionTrace, SessionEvent], None]:
        def ended(trace: SessionTrace, event: SessionEvent) -> None:
            if trace.state == "failed" and isinstance(event.data, dict):
                request = trace.request
                self.logs.add(
                    tenant_id,
                    trace.plugin_id,
                    logging.WARNING,
                    f"session {trace.session_id} ({request['type']}/{request['action']}) failed: "
                    f"{event.data.get('error_type')}: {event.data.get('message')}",
                    "daemon",
                )

        return ended

    # --- the Runtime contract -----------------------------------------------------------------

    def state(self, identifier: str) -> InstanceState:
        return InstanceState.READY if identifier in self._routes else InstanceState.ABSENT

    async def ensure_ready(
        self, spec: PluginSpec, *, timeout: float, progress: Callable[[str], None] | None = None
    ) -> None:
        if spec.identifier in self._routes:
            return
        if await self.reloads.wait(spec.identifier, timeout) is not None:
            return
        raise PluginUnavailable(
            "not_connected",
            f"debugging plugin {spec.plugin_id} is not connected; start it again with INSTALL_METHOD=remote",
        )

    async def open_session(self, identifier: str, session_id: str, request_line: bytes) -> SessionChannel:
        connection = self._routes.get(identifier) or self.reloads.successor(identifier)
        if connection is None or not connection.alive:
            raise PluginUnavailable("not_connected", f"debugging plugin {identifier} is not connected")
        plugin = connection.plugin
        trace = self.tracer.start(plugin.tenant_id, plugin.plugin_id, identifier, session_id, request_line)
        channel = await connection.router.open_session(session_id, request_line)
        return TracedChannel(channel, trace, self._session_ended(plugin.tenant_id))

    async def stop(self, identifier: str) -> None:
        """Disconnect the plugin (the SDK reconnects by itself a few seconds later)."""
        for connections in list(self._by_plugin.values()):
            for connection in connections:
                if connection.identifier == identifier:
                    connection.close("the plugin was stopped by the daemon")

    # --- introspection --------------------------------------------------------------------------

    def connections(self, tenant_id: str | None = None) -> list[DebugConnection]:
        """Registered connections (of one tenant), oldest first per plugin."""
        return [
            connection
            for (tenant, _), connections in self._by_plugin.items()
            if tenant_id is None or tenant == tenant_id
            for connection in connections
            if connection.registered_in is not None
        ]

    def instance_states(self) -> dict[str, str]:
        return {
            connection.plugin.plugin_id: state_of(connection) for connection in self.connections() if connection.alive
        }

    def problems(self) -> list[str]:
        if self.settings.PLUGIN_REMOTE_INSTALLING_ENABLED and self.address is None:
            return ["the debug listener is not listening (PLUGIN_REMOTE_INSTALLING_PORT)"]
        return []

    def health(self) -> dict[str, Any]:
        address = self.address
        return {
            "runtime": self.name,
            "listening": f"{address[0]}:{address[1]}" if address else None,
            "error": self.listen_error,
            "connections": self.listener.open_connections,
            "waiting_for_handshake": self.listener.admission.strangers,
            "registering_bytes": self.listener.admission.registering_bytes,
            "plugins": {connection.identifier: describe(connection) for connection in self.connections()},
        }


def state_of(connection: DebugConnection) -> str:
    """``ready``, or ``silent`` (no heartbeat for the heartbeat timeout, connection alive)."""
    return "ready" if connection.silent_since is None else "silent"


def describe(connection: DebugConnection) -> dict[str, Any]:
    plugin = connection.plugin
    silent_for = connection.silent_for
    return {
        "plugin_id": plugin.plugin_id,
        "plugin_unique_identifier": plugin.identifier,
        "tenant_id": plugin.tenant_id,
        "address": connection.address,
        "connected_at": round(connection.connected_at, 3),
        "registered_in_ms": round(connection.registered_in * 1000, 1) if connection.registered_in else None,
        "heartbeats": connection.heartbeats,
        "sessions": len(connection.router.sessions),
        "alive": connection.alive,
        "state": state_of(connection),
        "silent_for": round(silent_for, 1) if silent_for is not None else None,
    }
