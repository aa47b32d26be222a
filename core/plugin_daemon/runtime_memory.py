"""An in-memory runtime: plugins are Python callables in the daemon's own process.

For tests of the core (and as the smallest example of the runtime contract). A handler takes the
request ``data`` and yields :class:`SessionEvent` objects (or plain dicts, sent as ``stream``);
the runtime closes every session with ``end``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import anyio
import orjson

from plugin_daemon.runtime import (
    EventKind,
    InstanceState,
    PluginSpec,
    PluginUnavailable,
    Runtime,
    SessionChannel,
    SessionEvent,
)

Handler = Callable[[dict[str, Any]], AsyncIterator[Any]]


class MemoryChannel(SessionChannel):
    def __init__(self, session_id: str, events: AsyncIterator[Any]) -> None:
        self.session_id = session_id
        self._events = events
        self.sent: list[bytes] = []

    async def __aiter__(self) -> AsyncIterator[SessionEvent]:  # type: ignore[override]
        try:
            async for item in self._events:
                yield item if isinstance(item, SessionEvent) else SessionEvent(EventKind.STREAM, item)
        except Exception as exc:
            yield SessionEvent(EventKind.ERROR, {"error_type": type(exc).__name__, "message": str(exc), "args": {}})
            return
        yield SessionEvent(EventKind.END, {})

    async def send(self, line: bytes) -> None:
        self.sent.append(line)

    async def aclose(self) -> None:
        pass


class MemoryRuntime(Runtime):
    name: ClassVar[str] = "memory"

    def __init__(self, handlers: dict[tuple[str, str], Handler] | None = None) -> None:
        self.handlers: dict[tuple[str, str], Handler] = dict(handlers or {})
        self.states: dict[str, InstanceState] = {}
        self.launched: list[str] = []
        self.failing: dict[str, str] = {}
        #: identifier -> an event its launch waits for (a test holds an install "in progress" with it)
        self.holds: dict[str, threading.Event] = {}

    async def ensure_ready(
        self, spec: PluginSpec, *, timeout: float, progress: Callable[[str], None] | None = None
    ) -> None:
        if spec.identifier in self.failing:
            self.states[spec.identifier] = InstanceState.FAILED
            raise PluginUnavailable("failed", self.failing[spec.identifier])
        if progress:
            progress("starting in memory")
        hold = self.holds.get(spec.identifier)
        if hold is not None and not await anyio.to_thread.run_sync(hold.wait, timeout):
            raise PluginUnavailable("starting", f"{spec.identifier} did not start within {timeout:g} s")
        await anyio.lowlevel.checkpoint()
        self.states[spec.identifier] = InstanceState.READY
        self.launched.append(spec.identifier)

    def state(self, identifier: str) -> InstanceState:
        return self.states.get(identifier, InstanceState.ABSENT)

    async def open_session(self, identifier: str, session_id: str, request_line: bytes) -> SessionChannel:
        if self.state(identifier) is not InstanceState.READY:
            raise PluginUnavailable(self.state(identifier).value, f"{identifier} is not running")
        data = orjson.loads(request_line)["data"]
        handler = self.handlers.get((data["type"], data["action"]))
        if handler is None:
            return MemoryChannel(session_id, _nothing())
        return MemoryChannel(session_id, handler(data))

    async def stop(self, identifier: str) -> None:
        self.states.pop(identifier, None)

    def health(self) -> dict[str, Any]:
        return {identifier: state.value for identifier, state in self.states.items()}

    def problems(self) -> list[str]:
        failed = sum(1 for state in self.states.values() if state is InstanceState.FAILED)
        return [f"{failed} memory plugin(s) failed for good"] if failed else []


async def _nothing() -> AsyncIterator[Any]:
    return
    yield
