"""Logs of plugins, kept per plugin and streamed live to whoever watches (``/debugging/logs``).

Entries of a debugging plugin come from the plugin (log events it sends, problems with its output)
and from the daemon (connected, refused, disconnected, sessions that failed). Entries of a plugin
that runs for every tenant (local: its stderr, its restarts) have the tenant ``""`` and are seen by
every tenant (see :mod:`plugin_daemon.plugin_logs`). The last ``keep`` entries of each plugin
are kept, also after it disconnects, for the last ``max_plugins`` plugins written to. A watcher
gets new entries through a bounded memory stream; one that does not keep up loses entries (its
``dropped`` count says how many), it never slows a plugin's connection down.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

PluginKey = tuple[str, str]  # (tenant id, plugin id)
#: the tenant of an entry about a plugin that serves every tenant (a local plugin's output)
ANY_TENANT = ""


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: float  # unix seconds
    tenant_id: str
    plugin_id: str
    level: str
    message: str
    source: str  # "plugin" or "daemon"
    #: fields of a typed event (``{"type": "reload", "status": ...}``) shown with the entry
    event: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "time": round(self.time, 6),
            "plugin_id": self.plugin_id,
            "level": self.level,
            "message": self.message,
            "source": self.source,
        }
        if self.event:
            entry.update(self.event)
        return entry


@dataclass(eq=False)
class Watcher:
    tenant_id: str
    plugin_id: str | None  # None: every plugin of the tenant
    send: MemoryObjectSendStream[LogEntry]
    dropped: int = field(default=0)

    def wants(self, entry: LogEntry) -> bool:
        return entry.tenant_id in (self.tenant_id, ANY_TENANT) and (
            self.plugin_id is None or entry.plugin_id == self.plugin_id
        )


class LogBook:
    def __init__(self, keep: int = 1000, max_plugins: int = 1000, watcher_buffer: int = 1000) -> None:
        self.keep = keep
        self.max_plugins = max_plugins
        self.watcher_buffer = watcher_buffer
        self._entries: OrderedDict[PluginKey, deque[LogEntry]] = OrderedDict()
        self._watchers: list[Watcher] = []
        #: called with True when the first watcher comes, with False when the last one goes
        self.on_watched: Callable[[bool], None] | None = None

    def add(
        self,
        tenant_id: str,
        plugin_id: str,
        level: int,
        message: str,
        source: str,
        event: dict[str, object] | None = None,
    ) -> LogEntry:
        entry = LogEntry(time.time(), tenant_id, plugin_id, logging.getLevelName(level), message, source, event)
        key = (tenant_id, plugin_id)
        entries = self._entries.get(key)
        if entries is None:
            if len(self._entries) >= self.max_plugins:
                self._entries.popitem(last=False)
            entries = self._entries[key] = deque(maxlen=self.keep)
        else:
            self._entries.move_to_end(key)
        entries.append(entry)
        for watcher in self._watchers:
            if watcher.wants(entry):
                try:
                    watcher.send.send_nowait(entry)
                except anyio.WouldBlock:
                    watcher.dropped += 1
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
        return entry

    def history(self, tenant_id: str, plugin_id: str | None = None) -> list[LogEntry]:
        """Kept entries of one plugin (or of every plugin of the tenant), oldest first."""
        tenants = (tenant_id, ANY_TENANT)
        if plugin_id is not None:
            merged = [entry for tenant in tenants for entry in self._entries.get((tenant, plugin_id), ())]
        else:
            merged = [entry for (tenant, _), entries in self._entries.items() if tenant in tenants for entry in entries]
        merged.sort(key=lambda entry: entry.time)
        return merged

    @contextmanager
    def watch(self, tenant_id: str, plugin_id: str | None = None) -> Iterator[MemoryObjectReceiveStream[LogEntry]]:
        """New entries as they are added, until the block exits."""
        send, receive = anyio.create_memory_object_stream[LogEntry](self.watcher_buffer)
        watcher = Watcher(tenant_id, plugin_id, send)
        self._watchers.append(watcher)
        if len(self._watchers) == 1 and self.on_watched is not None:
            self.on_watched(True)
        try:
            with receive:
                yield receive
        finally:
            self._watchers.remove(watcher)
            send.close()
            if not self._watchers and self.on_watched is not None:
                self.on_watched(False)

    @property
    def watchers(self) -> int:
        return len(self._watchers)
