"""Dispatch: one call from Dify becomes one session on a plugin, streamed back as SSE.

A session always drains to the plugin's ``end`` and is then removed, even if the caller has gone
(its output is dropped then). :func:`relay_session` drives it and hands each SSE event to an
``emit`` callback. A streamed dispatch answer runs it in the request's own task and writes each
event to the response as it arrives (the ASGI server neither cancels that task nor fails its writes
when the caller leaves, so the session still drains); when its caller leaves, the session is
abandoned: the plugin's calls to Dify are refused from then on and the one under way is stopped
(``Session.abandon``). :func:`start_session` runs it as a task of
the daemon instead and returns the events as an async iterator, through a small memory stream,
for callers that consume the answer in pieces (non-streamed actions, plugin endpoints).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from plugin_daemon.api.envelope import sse_failure, sse_success
from plugin_daemon.errors import DaemonError, InternalError, PluginInvokeError, internal_error
from plugin_daemon.protocol.messages import encode_request
from plugin_daemon.runtime import EventKind, SessionChannel
from plugin_daemon.sessions import Session

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

#: Largest merged blob of an agent strategy (as the Go daemon).
MAX_AGENT_BLOB = 15 * 1024 * 1024

_STREAM, _INVOKE, _ERROR, _END = EventKind.STREAM, EventKind.INVOKE, EventKind.ERROR, EventKind.END


@dataclass(frozen=True)
class Access:
    """A dispatch route's plugin access type and action, and the ``data`` fields it requires."""

    type: str
    action: str
    required: tuple[str, ...] = ()
    streaming: bool = True


class BackwardsHandler(Protocol):
    async def handle(self, session: Session, channel: SessionChannel, payload: Any) -> None: ...


class BlobMerger:
    """Merges an agent strategy's ``blob_chunk`` items into one ``blob`` item, as the Go daemon does."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.sizes: dict[str, int] = {}

    def feed(self, item: Any) -> Any | None:
        if not isinstance(item, dict) or item.get("type") != "blob_chunk":
            return item
        message = item.get("message") or {}
        blob_id = str(message.get("id", ""))
        chunk = base64.b64decode(message.get("blob") or "")
        size = self.sizes.get(blob_id, 0) + len(chunk)
        if size > MAX_AGENT_BLOB:
            raise InternalError(f"blob {blob_id} is larger than {MAX_AGENT_BLOB} bytes")
        self.sizes[blob_id] = size
        self.parts.setdefault(blob_id, []).append(chunk)
        if not message.get("end"):
            return None
        data = b"".join(self.parts.pop(blob_id))
        self.sizes.pop(blob_id, None)
        return {"type": "blob", "message": {"blob": base64.b64encode(data).decode()}, "meta": item.get("meta")}


#: Hands one SSE event (or several, coalesced) to whoever listens; must not raise when nobody does any more.
Emit = Callable[[bytes], Awaitable[None]]


async def relay_session(
    daemon: Daemon,
    session: Session,
    channel: SessionChannel,
    emit: Emit,
    *,
    merge_blobs: bool = False,
    coalesce: bool = False,
) -> bytes:
    """Drive one session to its end, emitting its SSE events; then end the session and close the channel.

    Backwards calls run in a task group that is only created when the first one arrives: most
    sessions make none, and they then cost no task at all.

    With ``coalesce``, events that are already waiting in the channel (a stream item and the
    ``end`` right behind it, say) go out in one write, and the last bytes of the answer are
    returned instead of emitted, so that the caller can send them with the end of the response.
    Nothing is ever held back to wait for a later event: an event is emitted at once unless the
    channel already has the next one (:meth:`QueueSessionChannel.has_pending`). Without
    ``coalesce``, every event is emitted on its own and ``b""`` is returned.
    """
    pending = getattr(channel, "has_pending", None) if coalesce else None
    relay = _Relay(daemon, session, channel, emit, BlobMerger() if merge_blobs else None, pending)
    shutdown = daemon.shutdown
    try:
        with anyio.move_on_after(daemon.settings.PLUGIN_MAX_EXECUTION_TIMEOUT) as deadline:
            shutdown.track(deadline)  # a shutdown past its grace period cuts the call here
            try:
                invoke = await relay.run(None)
                if invoke is not None:
                    async with anyio.create_task_group() as calls:
                        calls.start_soon(daemon.backwards.handle, session, channel, invoke)
                        await relay.run(calls)
                        calls.cancel_scope.cancel()
            finally:
                shutdown.untrack(deadline)
        if deadline.cancelled_caught:
            session.outcome = "timeout"
            relay.held += sse_failure(shutdown.error() if shutdown.cutting else InternalError("killed by timeout"))
    except DaemonError as exc:
        session.outcome = "error"
        relay.held += sse_failure(exc)
    except Exception as exc:
        session.outcome = "error"
        log.exception("session %s failed", session.id)
        relay.held += sse_failure(internal_error(exc))
    finally:
        daemon.sessions.end(session)
        with anyio.CancelScope(shield=True):
            await channel.aclose()
    if pending is not None:
        return relay.held
    if relay.held:
        await emit(relay.held)
    return b""


class _Relay:
    """Forwards one session's events as SSE bytes (see :func:`relay_session`)."""

    __slots__ = ("daemon", "session", "channel", "emit", "merger", "pending", "held")

    def __init__(
        self,
        daemon: Daemon,
        session: Session,
        channel: SessionChannel,
        emit: Emit,
        merger: BlobMerger | None,
        pending: Callable[[], bool] | None,
    ) -> None:
        self.daemon = daemon
        self.session = session
        self.channel = channel
        self.emit = emit
        self.merger = merger
        self.pending = pending
        self.held = b""  # events not written yet: the next one is already waiting, or the answer is over

    async def run(self, calls: TaskGroup | None) -> Any:
        """Forward events until the session's end (returns None) or, without ``calls``, until the
        first backwards call (returns its payload, not yet handled)."""
        session, channel, merger, pending = self.session, self.channel, self.merger, self.pending
        backwards: BackwardsHandler = self.daemon.backwards
        async for event in channel:
            session.touch()
            kind = event.kind
            if kind is _STREAM:
                item = merger.feed(event.data) if merger is not None else event.data
                if item is not None:
                    self.held += sse_success(item)
            elif kind is _INVOKE:
                if calls is None:
                    return event.data
                calls.start_soon(backwards.handle, session, channel, event.data)
            elif kind is _ERROR:
                session.outcome = "error"
                self.held += sse_failure(PluginInvokeError.from_plugin(event.data))
                return None
            elif kind is _END:
                return None
            if self.held and (pending is None or not pending()):
                held, self.held = self.held, b""
                await self.emit(held)
        return None


async def run_session(
    daemon: Daemon,
    session: Session,
    channel: SessionChannel,
    output: MemoryObjectSendStream[bytes],
    *,
    merge_blobs: bool = False,
) -> None:
    """Drive one session to its end, writing SSE events to ``output`` while anyone listens."""
    listening = True

    async def emit(chunk: bytes) -> None:
        nonlocal listening
        if not listening:
            return
        try:
            await output.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            listening = False  # the caller left; keep draining the plugin's answer

    try:
        await relay_session(daemon, session, channel, emit, merge_blobs=merge_blobs)
    finally:
        with anyio.CancelScope(shield=True):
            await output.aclose()


async def open_session(
    daemon: Daemon,
    *,
    tenant_id: str,
    user_id: str,
    plugin_id: str,
    identifier: str,
    runtime_type: str,
    access: Access,
    body: dict[str, Any],
) -> tuple[Session, SessionChannel]:
    """Open a session on a ready instance: the request line is sent, the channel carries the answer."""
    control_panel = daemon.control_panel
    runtime = await control_panel.ready_runtime(identifier, runtime_type)
    spec = await control_panel.spec(identifier)
    session = daemon.sessions.create(
        tenant_id=tenant_id,
        user_id=user_id,
        plugin_id=plugin_id,
        identifier=identifier,
        runtime_type=runtime_type,
        access_type=access.type,
        action=access.action,
        declaration=spec.declaration,
    )
    data = {"user_id": user_id, "type": access.type, "action": access.action, **body["data"]}
    line = encode_request(
        session.id,
        data,
        conversation_id=body.get("conversation_id"),
        message_id=body.get("message_id"),
        app_id=body.get("app_id"),
        endpoint_id=body.get("endpoint_id"),
        context=body.get("context"),
    )
    try:
        channel = await runtime.open_session(identifier, session.id, line)
    except DaemonError:
        daemon.sessions.end(session, "failed")
        raise
    except Exception as exc:
        daemon.sessions.end(session, "failed")
        raise InternalError(f"failed to send the request to plugin {identifier}: {exc}") from exc
    return session, channel


async def start_session(daemon: Daemon, *, access: Access, **fields: Any) -> AsyncIterator[bytes]:
    """Open a session (the fields of :func:`open_session`), run it as a task of the daemon, and
    return its SSE byte stream."""
    session, channel = await open_session(daemon, access=access, **fields)
    send, receive = anyio.create_memory_object_stream[bytes](64)
    daemon.task_group.start_soon(
        lambda: run_session(daemon, session, channel, send, merge_blobs=access.type == "agent_strategy")
    )
    return _drain(receive)


async def _drain(receive: Any) -> AsyncIterator[bytes]:
    async with receive:
        async for chunk in receive:
            yield chunk
