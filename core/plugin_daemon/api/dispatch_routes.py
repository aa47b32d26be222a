"""Dispatch routes (``/plugin/{tenant_id}/dispatch/...``): calls into plugins, answered as SSE."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from plugin_daemon.api.envelope import JSONResponse, failure, sse_failure, success
from plugin_daemon.api.requests import json_body, tenant
from plugin_daemon.dispatch import Access, start_session
from plugin_daemon.errors import BadRequest, DaemonError, PluginNotFound
from plugin_daemon.manager import parse_identifier

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


async def _parse(request: Request, access: Access) -> dict[str, Any]:
    try:
        body = await json_body(request)
    except BadRequest as exc:
        raise BadRequest(exc.message, http_status=400) from None
    data = body.get("data")
    if not isinstance(data, dict):
        raise BadRequest("field 'data' is required and must be an object", http_status=400)
    for name in access.required:
        if data.get(name) in (None, ""):
            raise BadRequest(f"field 'data.{name}' is required", http_status=400)
    return body


def _dispatch_endpoint(access: Access, *, by_identifier: bool = False):  # noqa: ANN202
    async def endpoint(request: Request) -> Response:
        daemon = request.app.state.daemon
        try:
            tenant_id = tenant(request) if not by_identifier else request.headers.get("x-tenant-id", "")
            if by_identifier:
                identifier = request.headers.get("x-plugin-unique-identifier", "")
                if not identifier:
                    raise BadRequest("header X-Plugin-Unique-Identifier is required", http_status=400)
                plugin_id = parse_identifier(identifier).plugin_id
                runtime_type = daemon.control_panel.default_runtime_type()
            else:
                plugin_id = request.headers.get("x-plugin-id", "")
                if not plugin_id:
                    raise BadRequest("plugin_id is required", http_status=400)
                installation = daemon.manager._installations.get((tenant_id, plugin_id), False)
                if installation is False:
                    installation = await anyio.to_thread.run_sync(daemon.manager.installation, tenant_id, plugin_id)
                if installation is None:
                    raise PluginNotFound(
                        f"plugin {plugin_id} is not installed for tenant {tenant_id}", http_status=404
                    )
                identifier, runtime_type = installation.identifier, installation.runtime_type
            body = await _parse(request, access)
            stream = await start_session(
                daemon,
                tenant_id=tenant_id,
                user_id=str(body.get("user_id") or ""),
                plugin_id=plugin_id,
                identifier=identifier,
                runtime_type=runtime_type,
                access=access,
                body=body,
            )
        except DaemonError as exc:
            if exc.http_status != 200:
                return failure(exc)
            if not access.streaming:
                return failure(exc)
            return Response(sse_failure(exc), media_type="text/event-stream")
        if not access.streaming:
            return await _first_item(stream)
        return StreamingResponse(stream, media_type="text/event-stream")

    return endpoint


async def _first_item(stream: Any) -> Response:
    """Non-streaming actions answer one JSON envelope: the first item (or the error)."""
    async for chunk in stream:
        envelope = orjson.loads(chunk[len(b"data: ") :])
        return JSONResponse(envelope)
    return success(None)


def routes() -> list[Route]:
    result = []
    for path, access in ACCESSES.items():
        result.append(Route(f"/plugin/{{tenant_id}}/dispatch/{path}", _dispatch_endpoint(access), methods=["POST"]))
        result.append(
            Route(f"/v2/invoke/dispatch/{path}", _dispatch_endpoint(access, by_identifier=True), methods=["POST"])
        )
    return result
