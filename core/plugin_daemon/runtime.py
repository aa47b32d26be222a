"""The runtime contract: what every place that runs plugins (local, debug, serverless, yours) provides.

A runtime is registered by an extension through the ``plugin_daemon_register_runtimes`` hook and
built once per daemon by its factory. The core asks it for three things:

* ``ensure_ready(spec)``: make an installed plugin able to answer (launch it lazily, or wait
  for a launch already under way), or say precisely why it cannot;
* ``open_session(identifier, session_id, request_line)``: send one request line (the
  envelope of the Dify plugin protocol) and get a :class:`SessionChannel` whose events are the
  plugin's answer, in order, always closed by exactly one terminal event (``end`` or ``error``);
* ``stop(identifier)``: stop the plugin's instances.

A channel also carries lines back to the plugin (``send``): the core answers the plugin's
backwards invocations through it, whatever the transport underneath.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from plugin_daemon.daemon import Daemon


class EventKind(enum.StrEnum):
    """The kinds of session message a plugin sends (``data.type`` of a session frame)."""

    STREAM = "stream"
    INVOKE = "invoke"
    ERROR = "error"
    END = "end"


@dataclass(slots=True)
class SessionEvent:
    """One message of a plugin on one session.

    ``data`` is the payload as the plugin sent it: a stream item, a backwards invocation
    ``{type, backwards_request_id, request}``, or an error ``{error_type, message, args}``.
    """

    kind: EventKind
    data: Any = None


class InstanceState(enum.StrEnum):
    """Where an installed plugin stands in a runtime, as far as callers care."""

    ABSENT = "absent"  # never launched here
    STARTING = "starting"  # environment being built, or process started and not ready yet
    READY = "ready"
    RESTARTING = "restarting"  # crashed, a replacement is on its way
    FAILED = "failed"  # gave up: launch failed or crash loop
    STOPPED = "stopped"  # stopped while idle; the next call starts it again


@dataclass(frozen=True)
class PluginSpec:
    """Everything a runtime needs to run one installed plugin."""

    identifier: str  # author/name:version@checksum
    plugin_id: str  # author/name
    checksum: str
    declaration: dict[str, Any]
    package_path: Path | None = None  # the .difypkg on disk; None when the plugin brings itself (debug)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_limit(self) -> int | None:
        memory = (self.declaration.get("resource") or {}).get("memory")
        return int(memory) if memory else None


class PluginUnavailable(Exception):
    """A plugin cannot take a request. ``reason`` is one of the states above (or ``not_installed``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SessionChannel(ABC):
    """One session's two-way channel to a plugin instance."""

    session_id: str

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        """The plugin's messages, ending after the terminal ``end`` or ``error`` event.

        A runtime must always finish the iteration: if the instance dies, the transport breaks
        or a frame is unreadable, it yields an ``error`` event that says so, then stops.
        """

    @abstractmethod
    async def send(self, line: bytes) -> None:
        """Write one line (no trailing newline) to the plugin on this session."""

    @abstractmethod
    async def aclose(self) -> None:
        """The caller stops listening; later messages of this session are dropped."""


class Runtime(ABC):
    """A place where plugins run. Subclass it and register a factory for it."""

    #: The name used in installations (``runtime_type``) and in configuration.
    name: ClassVar[str]

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        """Background work for the daemon's lifetime (listeners, watchdogs).

        Called once in the daemon's task group; call ``task_status.started()`` when ready to
        take work. The default has nothing to run.
        """
        task_status.started()

    @abstractmethod
    async def ensure_ready(
        self, spec: PluginSpec, *, timeout: float, progress: Callable[[str], None] | None = None
    ) -> None:
        """Return once ``spec`` can take requests: launch it if needed, or wait for the launch.

        Raise :class:`PluginUnavailable` when it cannot within ``timeout`` seconds; its message
        says why (and carries the install output or stderr tail when there is one).
        ``progress`` receives short human lines about long steps (building the environment...).
        """

    @abstractmethod
    def state(self, identifier: str) -> InstanceState:
        """The current state of an installed plugin in this runtime (never blocks)."""

    @abstractmethod
    async def open_session(self, identifier: str, session_id: str, request_line: bytes) -> SessionChannel:
        """Send a request line to a ready instance and return the channel carrying its answer."""

    @abstractmethod
    async def stop(self, identifier: str) -> None:
        """Stop every instance of ``identifier``; the plugin may be launched again later."""

    def starts_with_daemon(self, identifier: str) -> bool:
        """Whether an installed plugin is launched when the daemon starts (the default), rather
        than on its first call. Read once per installed plugin at daemon start."""
        return True

    def health(self) -> dict[str, Any]:
        """A JSON-able summary for the health route and operators."""
        return {}

    def instance_states(self) -> dict[str, str]:
        """``plugin_id`` (author/name) → state (an :class:`InstanceState` value) of the instances this
        runtime holds now; read when metrics are scraped. The default holds none."""
        return {}

    def problems(self) -> list[str]:
        """What is broken right now, one short line each, naming no plugin or tenant (the health
        route shows them without a key). Empty when all is well."""
        return []

    async def discard(self, identifier: str) -> None:  # noqa: B027 - optional hook
        """Remove what this runtime keeps on disk for ``identifier`` (its extracted folder, its
        environment): no tenant has it installed any more and it is stopped, or its install failed.
        Called by the daemon; a launch of the same identifier meanwhile must still find a working
        folder (rebuilt if need be). The default keeps nothing."""

    def leftovers(self, installed: set[str]) -> list[Path]:
        """Folders this runtime keeps on disk for plugins that no identifier of ``installed`` names
        (left by uninstalls and failed installs); ``plugin-daemon gc`` lists them, and removes them
        while the daemon is stopped. The default keeps none."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop everything this runtime started (daemon shutdown)."""


class RuntimeStartError(Exception):
    """Raised by :meth:`Runtime.serve` when the runtime cannot start (a port taken...): the daemon
    does not start, and the message, which says what to change, is shown alone."""


#: Builds a runtime for a daemon; what extensions register.
RuntimeFactory = Callable[["Daemon"], Runtime]
