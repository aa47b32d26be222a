"""Endpoint routes: management under ``/plugin/{tenant_id}/endpoint/``, public webhooks under ``/e/``."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from plugin_daemon.api.envelope import JSONResponse
from plugin_daemon.api.management import Handler, daemon_of, enveloped
from plugin_daemon.api.requests import field, json_body, page, query, tenant
from plugin_daemon.config import Settings
from plugin_daemon.endpoints import (
    MAX_ENDPOINT_BODY,
    MAX_NAME_LENGTH,
    EndpointService,
    EndpointStreamBroken,
    IncomingRequest,
)
from plugin_daemon.errors import BadRequest, DaemonError
from plugin_daemon.manager import parse_identifier

log = logging.getLogger(__name__)

PUBLIC_METHODS = ["HEAD", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_PAGE_SIZE = 100


def service(request: Request) -> EndpointService:
    return daemon_of(request).endpoints


def _name(body: dict[str, Any]) -> str:
    name = field(body, "name")
    if not name.strip():
        raise BadRequest("field 'name' is required")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"field 'name' must be at most {MAX_NAME_LENGTH} characters")
    return name


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    return field(body, "settings", dict, required=False) or {}


# --- management ----------------------------------------------------------------------------
async def setup(request: Request) -> Any:
    body = await json_body(request)
    identifier = field(body, "plugin_unique_identifier")
    parse_identifier(identifier)
    user_id = field(body, "user_id")
    return await service(request).setup(tenant(request), user_id, identifier, _name(body), _settings(body))


async def update(request: Request) -> Any:
    body = await json_body(request)
    endpoint_id = field(body, "endpoint_id")
    user_id = field(body, "user_id")
    return await service(request).update(tenant(request), user_id, endpoint_id, _name(body), _settings(body))


async def remove(request: Request) -> Any:
    body = await json_body(request)
    return await service(request).remove(tenant(request), field(body, "endpoint_id"))


async def enable(request: Request) -> Any:
    body = await json_body(request)
    return await service(request).set_enabled(tenant(request), field(body, "endpoint_id"), True)


async def disable(request: Request) -> Any:
    body = await json_body(request)
    return await service(request).set_enabled(tenant(request), field(body, "endpoint_id"), False)


async def list_endpoints(request: Request) -> Any:
    number, size = page(request, max_size=MAX_PAGE_SIZE)
    return await service(request).list_endpoints(tenant(request), number, size)


async def list_plugin_endpoints(request: Request) -> Any:
    plugin_id = query(request, "plugin_id")
    number, size = page(request, max_size=MAX_PAGE_SIZE)
    return await service(request).list_endpoints(tenant(request), number, size, plugin_id)


# --- the public webhook --------------------------------------------------------------------
def _path_after_hook(request: Request, hook_id: str) -> str:
    """The path after ``/e/{hook_id}``, percent-encoded as the caller sent it."""
    raw = request.scope.get("raw_path")
    full = raw.decode("latin-1") if raw else quote(request.scope["path"])
    prefix = f"/e/{hook_id}"
    tail = full[len(prefix) :] if full.startswith(prefix) else "/" + quote(request.path_params.get("path", ""))
    return tail if tail.startswith("/") else "/" + tail


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = BadRequest(f"request body is larger than the endpoint limit of {limit} bytes", http_status=413)
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _incoming(request: Request, hook_id: str, deadline: float) -> IncomingRequest:
    try:
        with anyio.fail_after(deadline):
            body = await _bounded_body(request, MAX_ENDPOINT_BODY)
    except TimeoutError:
        raise BadRequest(f"the request body did not arrive within {deadline:g} s", http_status=408) from None
    return IncomingRequest(
        method=request.method,
        path=_path_after_hook(request, hook_id),
        query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.scope["headers"]],
        body=body,
    )


class PluginBodyResponse(StreamingResponse):
    """The plugin's body as it arrives; if the plugin fails mid-answer the body is left unfinished."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except EndpointStreamBroken as exc:
            log.warning("%s; the caller's connection is cut", exc)


async def invoke(request: Request) -> Response:
    """``/e/{hook_id}/...``: no auth; the plugin's own status, headers and streamed body."""
    daemon = daemon_of(request)
    hook_id = request.path_params["hook_id"]
    try:
        incoming = await _incoming(request, hook_id, daemon.settings.PLUGIN_MAX_EXECUTION_TIMEOUT)
        answer = await daemon.endpoints.invoke(hook_id, incoming)
    except DaemonError as exc:
        status = exc.http_status if exc.http_status != 200 else 500
        return JSONResponse(exc.envelope(), status_code=status)
    except ClientDisconnect:  # nobody to answer; not the daemon's error
        log.debug("the caller of endpoint %s left before sending its whole request", hook_id)
        return Response(status_code=400)
    return PluginBodyResponse(answer.body, status_code=answer.status, headers=answer.headers)


def routes(settings: Settings) -> list[Route]:
    base = "/plugin/{tenant_id}/endpoint"
    table: list[tuple[str, Handler, list[str]]] = [
        (f"{base}/setup", setup, ["POST"]),
        (f"{base}/update", update, ["POST"]),
        (f"{base}/remove", remove, ["POST"]),
        (f"{base}/enable", enable, ["POST"]),
        (f"{base}/disable", disable, ["POST"]),
        (f"{base}/list", list_endpoints, ["GET"]),
        (f"{base}/list/plugin", list_plugin_endpoints, ["GET"]),
    ]
    result = [Route(path, enveloped(handler), methods=methods) for path, handler, methods in table]
    if settings.PLUGIN_ENDPOINT_ENABLED:
        result.append(Route("/e/{hook_id}", invoke, methods=PUBLIC_METHODS))
        result.append(Route("/e/{hook_id}/{path:path}", invoke, methods=PUBLIC_METHODS))
    return result
