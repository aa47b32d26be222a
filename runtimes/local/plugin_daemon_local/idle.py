"""Lazy start and idle stop of local plugins: which start with the daemon, which to stop now.

An installed plugin starts on its first call, or with the daemon when it is always on
(``PLUGIN_ALWAYS_ON`` names it, or says ``*``) or when ``PLUGIN_IDLE_TIMEOUT`` is 0 (Go's
behaviour). A running plugin that is not always on is stopped once it has had no session in flight
and no call for ``PLUGIN_IDLE_TIMEOUT`` seconds; its environment stays, and the next call (a
dispatch, an endpoint, another plugin's call through Dify) starts it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plugin_daemon.config import Settings
from plugin_daemon.runtime import InstanceState, PluginSpec

if TYPE_CHECKING:
    from .supervisor import PluginSupervisor

#: What health says of a plugin stopped for idleness.
IDLE_STATUS = "stopped (idle)"


def plugin_id_of(identifier: str) -> str:
    """``author/name`` of an identifier ``author/name:version@checksum``."""
    return identifier.split(":", 1)[0]


@dataclass(frozen=True)
class IdleStopped:
    """A plugin stopped for idleness: what it takes to start it again, and when it stopped."""

    spec: PluginSpec
    stopped_at: float = field(default_factory=time.time)  # wall clock, for operators

    def health(self) -> dict[str, object]:
        return {
            "state": InstanceState.STOPPED.value,
            "status": IDLE_STATUS,
            "pid": None,
            "stopped_at": self.stopped_at,
            "sessions": 0,
        }


class IdlePolicy:
    """The rules of ``PLUGIN_IDLE_TIMEOUT`` and ``PLUGIN_ALWAYS_ON``."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = max(0.0, float(settings.PLUGIN_IDLE_TIMEOUT))
        always_on = settings.always_on_plugins
        self.everything_always_on = self.timeout == 0 or "*" in always_on
        self.always_on_ids = frozenset(always_on - {"*"})

    def always_on(self, plugin_id: str) -> bool:
        return self.everything_always_on or plugin_id in self.always_on_ids

    def starts_with_daemon(self, identifier: str) -> bool:
        return self.always_on(plugin_id_of(identifier))

    def idle_ones(self, supervisors: Iterable[PluginSupervisor], now: float) -> list[PluginSupervisor]:
        """The supervisors to stop now. A plugin with a session in flight counts as just used."""
        if self.everything_always_on:
            return []
        found = []
        for supervisor in supervisors:
            if supervisor.state is not InstanceState.READY or self.always_on(supervisor.spec.plugin_id):
                continue
            process = supervisor.process
            if process is None:
                continue
            if process.sessions:
                supervisor.last_used = now
            elif now - supervisor.last_used >= self.timeout:
                found.append(supervisor)
        return found
