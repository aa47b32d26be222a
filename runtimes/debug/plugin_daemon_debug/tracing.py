"""Request tracing for debugging plugins: the path of each session, as the daemon saw it.

A trace holds the request (type, action, data with credential values masked), every message
the plugin sent on the session (stream items, backwards invocations, the error or end), every
line the daemon sent back on it (backwards responses), with times relative to the request,
and how the session ended. Payloads longer than ``MAX_PAYLOAD`` bytes are cut. The last
``keep`` traces of each plugin are kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from plugin_daemon.runtime import EventKind, SessionChannel, SessionEvent

#: Longest payload kept as is in a trace (bytes of JSON).
MAX_PAYLOAD = 4096
#: Steps kept per trace; later ones are only counted.
MAX_STEPS = 500

PluginKey = tuple[str, str]


def _payload(value: Any) -> Any:
    try:
        raw = orjson.dumps(value)
    except TypeError:
        return repr(value)[:MAX_PAYLOAD]
    if len(raw) <= MAX_PAYLOAD:
        return value
    return {"truncated": True, "size": len(raw), "preview": raw[:MAX_PAYLOAD].decode("utf-8", "replace")}


def _masked(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("credentials"), dict):
        return {**data, "credentials": dict.fromkeys(data["credentials"], "***")}
    return data


class SessionTrace:
    """One session's path."""

    __slots__ = ("session_id", "plugin_id", "identifier", "started", "_t0", "request", "steps", "omitted", "state")

    def __init__(self, session_id: str, plugin_id: str, identifier: str, request_line: bytes) -> None:
        self.session_id = session_id
        self.plugin_id = plugin_id
        self.identifier = identifier
        self.started = time.time()
        self._t0 = time.monotonic()
        try:
            data = orjson.loads(request_line).get("data") or {}
        except (orjson.JSONDecodeError, AttributeError):
            data = {}
        self.request = {
            "type": data.get("type"),
            "action": data.get("action"),
            "data": _payload(_masked(data)),
        }
        self.steps: list[dict[str, Any]] = []
        self.omitted = 0
        self.state = "running"

    def _step(self, direction: str, kind: str, data: Any) -> None:
        if len(self.steps) >= MAX_STEPS:
            self.omitted += 1
            return
        self.steps.append(
            {"at": round(time.monotonic() - self._t0, 6), "from": direction, "kind": kind, "data": _payload(data)}
        )

    def plugin_sent(self, event: SessionEvent) -> None:
        self._step("plugin", event.kind.value, event.data)
        if event.kind is EventKind.END:
            self.state = "ended"
        elif event.kind is EventKind.ERROR:
            self.state = "failed"

    def daemon_sent(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
            kind, data = message.get("event", "line"), message.get("data")
        except (orjson.JSONDecodeError, AttributeError):
            kind, data = "line", line[:MAX_PAYLOAD].decode("utf-8", "replace")
        self._step("daemon", kind, data)

    def closed_by_caller(self) -> None:
        if self.state == "running":
            self.state = "abandoned"

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "plugin_id": self.plugin_id,
            "plugin_unique_identifier": self.identifier,
            "started_at": round(self.started, 6),
            "state": self.state,
            "request": self.request,
            "steps": list(self.steps),
            "omitted_steps": self.omitted,
        }


class Tracer:
    """The last traces of each debugging plugin."""

    def __init__(self, keep: int = 100, max_plugins: int = 1000) -> None:
        self.keep = keep
        self.max_plugins = max_plugins
        self._traces: OrderedDict[PluginKey, deque[SessionTrace]] = OrderedDict()

    def start(self, tenant_id: str, plugin_id: str, identifier: str, session_id: str, line: bytes) -> SessionTrace:
        trace = SessionTrace(session_id, plugin_id, identifier, line)
        key = (tenant_id, plugin_id)
        traces = self._traces.get(key)
        if traces is None:
            if len(self._traces) >= self.max_plugins:
                self._traces.popitem(last=False)
            traces = self._traces[key] = deque(maxlen=self.keep)
        else:
            self._traces.move_to_end(key)
        traces.append(trace)
        return trace

    def traces(self, tenant_id: str, plugin_id: str | None = None) -> list[SessionTrace]:
        """Newest first."""
        found = [
            trace
            for (tenant, plugin), traces in self._traces.items()
            if tenant == tenant_id and (plugin_id is None or plugin == plugin_id)
            for trace in traces
        ]
        found.sort(key=lambda trace: trace.started, reverse=True)
        return found


class TracedChannel(SessionChannel):
    """A session channel that records what passes through it in a :class:`SessionTrace`."""

    def __init__(
        self, inner: SessionChannel, trace: SessionTrace, on_end: Callable[[SessionTrace, SessionEvent], None]
    ) -> None:
        self.session_id = inner.session_id
        self._inner = inner
        self.trace = trace
        self._on_end = on_end
        self._events: AsyncIterator[SessionEvent] = inner.__aiter__()

    def __aiter__(self) -> TracedChannel:
        return self

    async def __anext__(self) -> SessionEvent:
        event = await self._events.__anext__()
        self.trace.plugin_sent(event)
        if event.kind is EventKind.ERROR or event.kind is EventKind.END:
            self._on_end(self.trace, event)
        return event

    def has_pending(self) -> bool:
        """Whether the next event is already queued (when the inner channel can tell)."""
        pending = getattr(self._inner, "has_pending", None)
        return bool(pending()) if pending is not None else False

    async def send(self, line: bytes) -> None:
        self.trace.daemon_sent(line)
        await self._inner.send(line)

    async def aclose(self) -> None:
        self.trace.closed_by_caller()
        await self._inner.aclose()
