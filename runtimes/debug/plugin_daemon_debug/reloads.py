"""Reload grace: calls wait for a debugging plugin that left by itself and is coming back.

A developer's plugin restarts after every edit (``plugin-daemon dev``, ``watchfiles``, by hand):
its connection ends, and a new process registers about a second later. When the *plugin* closed
its connection (not the daemon: an uninstall, a silent drop, a shutdown), its installation is
kept for ``PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE`` seconds. Calls that arrive meanwhile wait for
the new registration of the same plugin and tenant instead of failing; calls in flight still fail
at once, their process is gone. When it does not come back in time, it is uninstalled as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .connection import DebugConnection

PluginKey = tuple[str, str]  # (tenant id, plugin id)


@dataclass(eq=False)
class Returning:
    """A plugin that left by itself, within its grace."""

    tenant_id: str
    plugin_id: str
    identifier: str  # the identity it was installed as when it left
    left_at: float  # time.monotonic()
    deadline: float  # time.monotonic()
    back: anyio.Event = field(default_factory=anyio.Event)
    successor: DebugConnection | None = None


class ReloadGrace:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._by_plugin: dict[PluginKey, Returning] = {}
        self._by_identifier: dict[str, Returning] = {}

    def leaving(self, tenant_id: str, plugin_id: str, identifier: str) -> Returning:
        """The plugin's last connection ended by itself: calls may wait for it until the deadline."""
        now = time.monotonic()
        record = Returning(tenant_id, plugin_id, identifier, now, now + self.grace)
        self._by_plugin[(tenant_id, plugin_id)] = record
        self._by_identifier[identifier] = record
        return record

    def arrived(self, connection: DebugConnection) -> Returning | None:
        """A registration of a plugin within its grace: its waiting calls go to ``connection``."""
        plugin = connection.plugin
        record = self._by_plugin.pop((plugin.tenant_id, plugin.plugin_id), None)
        if record is not None:
            record.successor = connection
            record.back.set()
        return record

    def forget(self, record: Returning) -> bool:
        """The grace is over; True when the plugin never came back."""
        key = (record.tenant_id, record.plugin_id)
        if self._by_plugin.get(key) is record:
            del self._by_plugin[key]
        if self._by_identifier.get(record.identifier) is record:
            del self._by_identifier[record.identifier]
        return record.successor is None

    def successor(self, identifier: str) -> DebugConnection | None:
        """The live connection that took over ``identifier``'s calls (a call that waited for it)."""
        record = self._by_identifier.get(identifier)
        if record is None or record.successor is None or not record.successor.alive:
            return None
        return record.successor

    async def wait(self, identifier: str, timeout: float) -> DebugConnection | None:
        """Wait (at most ``timeout`` s, and never past the grace) for ``identifier`` to come back."""
        record = self._by_identifier.get(identifier)
        if record is None:
            return None
        with anyio.move_on_after(min(timeout, record.deadline - time.monotonic())):
            await record.back.wait()
        return self.successor(identifier)
