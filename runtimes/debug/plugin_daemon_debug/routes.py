"""HTTP routes of the debug runtime, under the tenant (``X-Api-Key`` like every ``/plugin/`` route).

- ``POST /plugin/{tenant_id}/debugging/key``: the tenant's debugging key (Dify's console shows it).
- ``GET  /plugin/{tenant_id}/debugging/plugins``: the tenant's connected debugging plugins.
- ``GET  /plugin/{tenant_id}/debugging/logs?plugin_id=&follow=``: kept log entries, then new ones
  live (``follow``, the default), as server-sent events.
- ``GET  /plugin/{tenant_id}/debugging/sessions?plugin_id=&limit=``: the latest request traces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from plugin_daemon.api.envelope import failure
from plugin_daemon.api.management import enveloped
from plugin_daemon.api.requests import tenant
from plugin_daemon.errors import BadRequest, InternalError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .runtime import DebugRuntime, describe

if TYPE_CHECKING:
    from plugin_daemon.logbook import LogEntry

#: Seconds between keep-alive comments on an idle log stream.
KEEPALIVE = 15.0
MAX_TRACES = 100


def runtime_of(request: Request) -> DebugRuntime:
    runtime = request.app.state.daemon.control_panel.runtimes.get(DebugRuntime.name)
    if not isinstance(runtime, DebugRuntime):
        raise InternalError("the debug runtime is not loaded")
    return runtime


def _plugin_id(request: Request) -> str | None:
    plugin_id = request.query_params.get("plugin_id") or None
    if plugin_id is not None and len(plugin_id) > 255:
        raise BadRequest("plugin_id is too long")
    return plugin_id


async def debugging_key(request: Request) -> Any:
    tenant_id = tenant(request)
    key = await anyio.to_thread.run_sync(runtime_of(request).keys.issue, tenant_id)
    return {"key": key}


async def debugging_plugins(request: Request) -> Any:
    return [describe(connection) for connection in runtime_of(request).connections(tenant(request))]


async def debugging_sessions(request: Request) -> Any:
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_TRACES:
        raise BadRequest(f"limit must be between 1 and {MAX_TRACES}")
    traces = runtime_of(request).tracer.traces(tenant(request), _plugin_id(request))
    return [trace.as_dict() for trace in traces[:limit]]


def _event(entry: LogEntry) -> bytes:
    return b"data: " + orjson.dumps(entry.as_dict()) + b"\n\n"


async def debugging_logs(request: Request) -> Response:
    try:
        tenant_id = tenant(request)
        plugin_id = _plugin_id(request)
        book = runtime_of(request).logs
    except (BadRequest, InternalError) as exc:
        return failure(exc)
    follow = request.query_params.get("follow", "true").lower() not in ("0", "false", "no")
    shutdown = request.app.state.daemon.shutdown

    async def stream() -> AsyncIterator[bytes]:
        with book.watch(tenant_id, plugin_id) as live:  # watch first: nothing falls between the two
            for entry in book.history(tenant_id, plugin_id):
                yield _event(entry)
            if not follow:
                return
            yield b": live\n\n"
            while not shutdown.draining:
                with anyio.move_on_after(KEEPALIVE) as idle, shutdown.waiting(idle):
                    entry = await live.receive()
                if shutdown.draining:  # the stream ends at once: a stop does not wait for it
                    return
                if idle.cancelled_caught:
                    yield b": keep-alive\n\n"
                else:
                    yield _event(entry)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def routes() -> list[Route]:
    base = "/plugin/{tenant_id}/debugging"
    return [
        Route(f"{base}/key", enveloped(debugging_key), methods=["POST"]),
        Route(f"{base}/plugins", enveloped(debugging_plugins), methods=["GET"]),
        Route(f"{base}/sessions", enveloped(debugging_sessions), methods=["GET"]),
        Route(f"{base}/logs", debugging_logs, methods=["GET"]),
    ]
