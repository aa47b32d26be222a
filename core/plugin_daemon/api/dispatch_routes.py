"""Dispatch routes (``/plugin/{tenant_id}/dispatch/...``): calls into plugins, answered as SSE."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plugin_daemon.api.envelope import JSONResponse, failure, sse_failure, success
from plugin_daemon.api.middleware import BodyTooLarge
from plugin_daemon.api.requests import check_tenant, parse_json_object
from plugin_daemon.dispatch import Access, open_session, relay_session, start_session
from plugin_daemon.errors import BadRequest, DaemonError, InternalError, PluginNotFound, internal_error
from plugin_daemon.manager import parse_identifier

log = logging.getLogger(__name__)

A = Access
#: path under dispatch/ -> what the plugin is asked (protocol.md §4.2)
ACCESSES: dict[str, Access] = {
    "tool/invoke": A("tool", "invoke_tool", ("provider", "tool")),
    "tool/validate_credentials": A("tool", "validate_tool_credentials", ("provider",)),
    "tool/get_runtime_parameters": A("tool", "get_tool_runtime_parameters", ("provider", "tool")),
    "llm/invoke": A("model", "invoke_llm", ("provider", "model", "model_type")),
    "llm/num_tokens": A("model", "get_llm_num_tokens", ("provider", "model")),
    "text_embedding/invoke": A("model", "invoke_text_embedding", ("provider", "model", "texts")),
    "multimodal_embedding/invoke": A("model", "invoke_multimodal_embedding", ("provider", "model")),
    "text_embedding/num_tokens": A("model", "get_text_embedding_num_tokens", ("provider", "model")),
    "rerank/invoke": A("model", "invoke_rerank", ("provider", "model")),
    "multimodal_rerank/invoke": A("model", "invoke_multimodal_rerank", ("provider", "model")),
    "tts/invoke": A("model", "invoke_tts", ("provider", "model")),
    "tts/model/voices": A("model", "get_tts_model_voices", ("provider", "model")),
    "speech2text/invoke": A("model", "invoke_speech2text", ("provider", "model")),
    "moderation/invoke": A("model", "invoke_moderation", ("provider", "model")),
    "model/validate_provider_credentials": A("model", "validate_provider_credentials", ("provider",)),
    "model/validate_model_credentials": A("model", "validate_model_credentials", ("provider", "model")),
    "model/schema": A("model", "get_ai_model_schemas", ("provider", "model")),
    "model/polling/start": A("model", "start_polling", ("provider", "model"), streaming=False),
    "model/polling/check": A("model", "check_polling", ("provider", "model"), streaming=False),
    "agent_strategy/invoke": A(
        "agent_strategy", "invoke_agent_strategy", ("agent_strategy_provider", "agent_strategy")
    ),
    "oauth/get_authorization_url": A("oauth", "get_authorization_url", ("provider",)),
    "oauth/get_credentials": A("oauth", "get_credentials", ("provider",)),
    "oauth/refresh_credentials": A("oauth", "refresh_credentials", ("provider",)),
    "dynamic_select/fetch_parameter_options": A("dynamic_parameter", "fetch_parameter_options", ("provider",)),
    "datasource/validate_credentials": A("datasource", "validate_datasource_credentials", ("provider",)),
    "datasource/get_website_crawl": A("datasource", "invoke_website_datasource_get_crawl", ("provider",)),
    "datasource/get_online_document_pages": A(
        "datasource", "invoke_online_document_datasource_get_pages", ("provider",)
    ),
    "datasource/get_online_document_page_content": A(
        "datasource", "invoke_online_document_datasource_get_page_content", ("provider",)
    ),
    "datasource/online_drive_browse_files": A("datasource", "invoke_online_drive_browse_files", ("provider",)),
    "datasource/online_drive_download_file": A("datasource", "invoke_online_drive_download_file", ("provider",)),
    "trigger/invoke_event": A("trigger", "invoke_trigger_event", ("provider",)),
    "trigger/validate_credentials": A("trigger", "validate_trigger_credentials", ("provider",)),
    "trigger/dispatch_event": A("trigger", "dispatch_trigger_event", ("provider",)),
    "trigger/subscribe": A("trigger", "subscribe_trigger", ("provider",)),
    "trigger/unsubscribe": A("trigger", "unsubscribe_trigger", ("provider",)),
    "trigger/refresh": A("trigger", "refresh_trigger", ("provider",)),
}


def _parse(raw: bytes, access: Access) -> dict[str, Any]:
    try:
        body = parse_json_object(raw)
    except BadRequest as exc:
        raise BadRequest(exc.message, http_status=400) from None
    data = body.get("data")
    if not isinstance(data, dict):
        raise BadRequest("field 'data' is required and must be an object", http_status=400)
    for name in access.required:
        if data.get(name) in (None, ""):
            raise BadRequest(f"field 'data.{name}' is required", http_status=400)
    return body


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _not_installed(daemon: Any, tenant_id: str, plugin_id: str) -> PluginNotFound:
    task_id = daemon.installer.installing.get((tenant_id, plugin_id))
    if task_id is not None:
        return PluginNotFound(
            f"plugin {plugin_id} is still being installed for tenant {tenant_id} (install task {task_id}); "
            "call again when the task has succeeded",
            args={"reason": "installing", "task_id": task_id},
            http_status=404,
        )
    return PluginNotFound(f"plugin {plugin_id} is not installed for tenant {tenant_id}", http_status=404)


SSE = "text/event-stream"
_SSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
}
_SSE_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
#: The last event of an answer whose relay was cancelled from outside (the server's own shutdown
#: deadline, say): an answer that did not reach the plugin's end never ends like a complete one.
STOPPED_EARLY = sse_failure(InternalError("the call was stopped before it ended"))


class DispatchEndpoint:
    """One dispatch route, as a pure ASGI app (no per-request task, stream or wrapper).

    A streamed answer is relayed from the plugin's session to the response in this request's
    task, each event written as it arrives.
    """

    __slots__ = ("access", "by_identifier", "merge_blobs")

    def __init__(self, access: Access, *, by_identifier: bool = False) -> None:
        self.access = access
        self.by_identifier = by_identifier
        self.merge_blobs = access.type == "agent_strategy"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        daemon = scope["app"].state.daemon
        access = self.access
        try:
            if self.by_identifier:
                tenant_id = _header(scope, b"x-tenant-id")
                identifier = _header(scope, b"x-plugin-unique-identifier")
                if not identifier:
                    raise BadRequest("header X-Plugin-Unique-Identifier is required", http_status=400)
                plugin_id = parse_identifier(identifier).plugin_id
                runtime_type = daemon.control_panel.default_runtime_type()
            else:
                tenant_id = check_tenant(
                    scope["path_params"]["tenant_id"], uuid_only=daemon.database.tenant_ids_are_uuids
                )
                plugin_id = _header(scope, b"x-plugin-id")
                if not plugin_id:
                    raise BadRequest("plugin_id is required", http_status=400)
                installation = daemon.manager.cached_installation(tenant_id, plugin_id)
                if installation is False:
                    installation = await anyio.to_thread.run_sync(daemon.manager.installation, tenant_id, plugin_id)
                if installation is None:
                    raise _not_installed(daemon, tenant_id, plugin_id)
                identifier, runtime_type = installation.identifier, installation.runtime_type
            body = _parse(await _read_body(receive), access)
            fields = {
                "tenant_id": tenant_id,
                "user_id": str(body.get("user_id") or ""),
                "plugin_id": plugin_id,
                "identifier": identifier,
                "runtime_type": runtime_type,
                "access": access,
                "body": body,
            }
            if not access.streaming:
                response = await _first_item(await start_session(daemon, **fields))
            else:
                session, channel = await open_session(daemon, **fields)
                response = None
        except ClientDisconnect:
            log.debug("the caller of %s left before sending its whole request", scope["path"])
            return
        except asyncio.CancelledError:  # the server's shutdown deadline passed before the plugin was called
            error = daemon.shutdown.error()
            await (failure(error) if not access.streaming else Response(sse_failure(error), media_type=SSE))(
                scope, receive, send
            )
            raise
        except BodyTooLarge:
            raise  # answered 413 by the body-size middleware
        except Exception as exc:  # a DaemonError, or a fault inside the daemon (its database gone, say)
            error = exc if isinstance(exc, DaemonError) else internal_error(exc)
            if error is not exc:
                log.exception("%s failed before the plugin was called", scope["path"])
            if error.http_status != 200 or not access.streaming:
                response = failure(error)
            else:
                response = Response(sse_failure(error), media_type=SSE)
        if response is not None:
            await response(scope, receive, send)
            return
        await send(_SSE_START)

        async def emit(chunk: bytes) -> None:
            # uvicorn drops (does not raise on) writes once the caller has gone
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        # Whether the caller leaves matters only once the plugin calls Dify (see Session.abandon): the
        # watcher starts then. It is a plain asyncio task: an anyio task group there, on every call,
        # doubled the daemon's CPU per call (100 to 215 us at 64 callers). It never outlives the relay.
        watcher: asyncio.Task[None] | None = None

        def watch_caller() -> None:
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.get_running_loop().create_task(_abandon_when_gone(receive, session))

        session.watch_caller = watch_caller
        tail = STOPPED_EARLY  # unless the relay returns: it always reaches the session's end then
        try:
            tail = await relay_session(daemon, session, channel, emit, merge_blobs=self.merge_blobs, coalesce=True)
        finally:
            session.watch_caller = None
            if watcher is not None:
                watcher.cancel()
            await send({"type": "http.response.body", "body": tail, "more_body": False} if tail else _SSE_END)


async def _abandon_when_gone(receive: Receive, session: Any) -> None:
    """Abandon the session when the caller disconnects (the body has been read: what comes next is that)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    session.abandon()


async def _first_item(stream: Any) -> Response:
    """Non-streaming actions answer one JSON envelope: the first item (or the error)."""
    async for chunk in stream:
        envelope = orjson.loads(chunk[len(b"data: ") :])
        return JSONResponse(envelope)
    return success(None)


DISPATCH_PREFIX = "/plugin/"
IDENTIFIER_DISPATCH_PREFIX = "/v2/invoke/dispatch/"


class DispatchFastPath:
    """Sends ``POST /plugin/{tenant_id}/dispatch/...`` and ``POST /v2/invoke/dispatch/...`` straight
    to their endpoint with one dictionary lookup, instead of a scan of every route's pattern.

    The same endpoints are also mounted as ordinary routes (see :func:`routes`); anything this does
    not recognise exactly goes on to the router, which answers as it always did.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.by_tenant = {path: DispatchEndpoint(access) for path, access in ACCESSES.items()}
        self.by_identifier = {path: DispatchEndpoint(access, by_identifier=True) for path, access in ACCESSES.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            endpoint = None
            if path.startswith(DISPATCH_PREFIX):
                parts = path.split("/", 4)  # "", "plugin", tenant_id, "dispatch", action path
                if len(parts) == 5 and parts[3] == "dispatch" and parts[2]:
                    endpoint = self.by_tenant.get(parts[4])
                    if endpoint is not None:
                        scope["path_params"] = {"tenant_id": parts[2]}
            elif path.startswith(IDENTIFIER_DISPATCH_PREFIX):
                endpoint = self.by_identifier.get(path[len(IDENTIFIER_DISPATCH_PREFIX) :])
                if endpoint is not None:
                    scope["path_params"] = {}
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def routes() -> list[Route]:
    result = []
    for path, access in ACCESSES.items():
        result.append(Route(f"/plugin/{{tenant_id}}/dispatch/{path}", DispatchEndpoint(access), methods=["POST"]))
        result.append(
            Route(f"/v2/invoke/dispatch/{path}", DispatchEndpoint(access, by_identifier=True), methods=["POST"])
        )
    return result
