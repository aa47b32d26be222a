"""Management routes (``/plugin/{tenant_id}/management/...``): packages, installs, listings."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from plugin_daemon import category_listing
from plugin_daemon.api.envelope import failure, success
from plugin_daemon.api.middleware import BodyTooLarge
from plugin_daemon.api.requests import field, json_body, page, query, tenant
from plugin_daemon.errors import BadRequest, DaemonError, PluginNotFound, internal_error

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Any]]


def daemon_of(request: Request) -> Daemon:
    return request.app.state.daemon


def enveloped(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler's result (or its DaemonError) in the Dify envelope."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except DaemonError as exc:
            return failure(exc)
        except BodyTooLarge:
            raise  # answered 413 by the body-size middleware
        except ClientDisconnect:
            log.debug("the caller of %s %s left before sending its whole request", request.method, request.url.path)
            return failure(BadRequest("the client disconnected", http_status=400))
        except HTTPException as exc:  # Starlette's own refusals (a malformed multipart body, ...)
            return failure(BadRequest(str(exc.detail), http_status=exc.status_code))
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.url.path)
            return failure(internal_error(exc))
        if isinstance(result, Response):
            return result
        return success(result)

    return endpoint


def in_thread(function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return anyio.to_thread.run_sync(function, *args)


# --- packages and installs ----------------------------------------------------------------
async def _uploaded_file(request: Request, name: str, what: str, limit: int) -> tuple[bytes, bool]:
    """The multipart file ``name`` (read up to one byte past ``limit``) and ``verify_signature``."""
    tenant(request)
    async with request.form(max_files=1, max_fields=8, max_part_size=limit + 1) as form:
        upload = form.get(name)
        if not isinstance(upload, UploadFile):
            raise BadRequest(f"multipart field {name!r} (the {what} file) is required")
        data = await upload.read(limit + 1)
        verify = str(form.get("verify_signature", "false")).lower() == "true"
    return data, verify


async def upload_package(request: Request) -> Any:
    daemon = daemon_of(request)
    data, verify = await _uploaded_file(request, "dify_pkg", ".difypkg", daemon.settings.MAX_PLUGIN_PACKAGE_SIZE)
    return await in_thread(lambda: daemon.manager.upload(data, verify_signature=verify))


BUNDLE_UPLOAD_SUFFIX = "/management/install/upload/bundle"


async def upload_bundle(request: Request) -> Any:
    daemon = daemon_of(request)
    data, verify = await _uploaded_file(request, "dify_bundle", ".difybundle", daemon.settings.MAX_BUNDLE_PACKAGE_SIZE)
    return await in_thread(lambda: daemon.manager.upload_bundle(data, verify_signature=verify))


async def install_identifiers(request: Request) -> Any:
    daemon = daemon_of(request)
    tenant_id = tenant(request)
    body = await json_body(request)
    identifiers = field(body, "plugin_unique_identifiers", list)
    if not all(isinstance(item, str) for item in identifiers):
        raise BadRequest("plugin_unique_identifiers must be a list of strings")
    source = field(body, "source", str, required=False) or "package"
    metas = field(body, "metas", list, required=False) or []
    return await daemon.installer.start(tenant_id, identifiers, source, metas)


async def install_upgrade(request: Request) -> Any:
    daemon = daemon_of(request)
    tenant_id = tenant(request)
    body = await json_body(request)
    field(body, "original_plugin_unique_identifier")
    new = field(body, "new_plugin_unique_identifier")
    source = field(body, "source", str, required=False) or "package"
    meta = field(body, "meta", dict, required=False) or {}
    return await daemon.installer.start(tenant_id, [new], source, [meta])


async def list_tasks(request: Request) -> Any:
    number, size = page(request)
    return await in_thread(daemon_of(request).installer.list, tenant(request), number, size)


async def get_task(request: Request) -> Any:
    return await in_thread(daemon_of(request).installer.get, tenant(request), request.path_params["task_id"])


async def delete_all_tasks(request: Request) -> Any:
    await in_thread(daemon_of(request).installer.delete, tenant(request))
    return True


async def delete_task(request: Request) -> Any:
    await in_thread(daemon_of(request).installer.delete, tenant(request), request.path_params["task_id"])
    return True


async def delete_task_item(request: Request) -> Any:
    params = request.path_params
    await in_thread(daemon_of(request).installer.delete_item, tenant(request), params["task_id"], params["identifier"])
    return True


async def _identifier_param(request: Request) -> str:
    """``plugin_unique_identifier`` from the query, or from a JSON body (Dify sends both ways)."""
    value = request.query_params.get("plugin_unique_identifier")
    if not value and request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if body:
            value = (await json_body(request)).get("plugin_unique_identifier")
    if not value or not isinstance(value, str):
        raise BadRequest("plugin_unique_identifier is required")
    return value


async def decode_from_identifier(request: Request) -> Any:
    identifier = await _identifier_param(request)
    return await in_thread(daemon_of(request).manager.decode_from_identifier, identifier)


async def fetch_manifest(request: Request) -> Any:
    identifier = await _identifier_param(request)
    return await in_thread(daemon_of(request).manager.manifest, identifier)


async def fetch_readme(request: Request) -> Any:
    identifier = await _identifier_param(request)
    language = request.query_params.get("language", "")
    return await in_thread(daemon_of(request).manager.readme, identifier, language)


async def extract_asset(request: Request) -> Response:
    tenant(request)
    identifier = query(request, "plugin_unique_identifier")
    file_path = query(request, "file_path")
    data = await in_thread(daemon_of(request).manager.extract_asset, identifier, file_path)
    return Response(data, media_type="application/octet-stream")


async def fetch_identifier(request: Request) -> Any:
    identifier = await _identifier_param(request)
    return await in_thread(daemon_of(request).manager.package_known, identifier)


async def uninstall(request: Request) -> Any:
    daemon = daemon_of(request)
    tenant_id = tenant(request)
    body = await json_body(request)
    installation_id = field(body, "plugin_installation_id")
    removed, unused = await in_thread(daemon.manager.uninstall, tenant_id, installation_id)
    if removed is not None and unused:  # stopped once its calls in flight have ended
        daemon.task_group.start_soon(daemon.retire, removed.identifier, removed.runtime_type)
    return True


# --- listings ---------------------------------------------------------------------------
async def list_installations(request: Request) -> Any:
    number, size = page(request)
    return await in_thread(daemon_of(request).manager.list_installations, tenant(request), number, size)


async def installation_ids(request: Request) -> Any:
    tenant_id = tenant(request)
    category = request.query_params.get("category")
    if not category:
        raise BadRequest(
            f"query parameter 'category' is required: one of {', '.join(category_listing.CATEGORY_KEYS)}",
            http_status=400,
        )
    return await in_thread(category_listing.installed_plugin_ids, daemon_of(request).manager, tenant_id, category)


def _bounded_int(request: Request, name: str, low: int, high: int) -> int:
    """A required integer query parameter in [low, high] (HTTP 400 otherwise, as the Go daemon)."""
    raw = request.query_params.get(name, "")
    if not re.fullmatch(r"[+-]?[0-9]{1,12}", raw) or not low <= int(raw) <= high:
        raise BadRequest(f"query parameter {name!r} is required: an integer from {low} to {high}", http_status=400)
    return int(raw)


def _list_filters(request: Request) -> category_listing.ListFilters:
    params = request.query_params
    text = params.get("query", "")
    if len(text) > category_listing.MAX_QUERY_LENGTH:
        raise BadRequest(
            f"query parameter 'query' is at most {category_listing.MAX_QUERY_LENGTH} characters", http_status=400
        )
    tags = params.getlist("tags")
    if len(tags) > category_listing.MAX_TAGS:
        raise BadRequest(f"at most {category_listing.MAX_TAGS} 'tags' at once", http_status=400)
    unknown = [tag for tag in tags if tag not in category_listing.PLUGIN_TAGS]
    if unknown:
        raise BadRequest(
            f"unknown plugin tag {unknown[0]!r} in 'tags': expected some of "
            f"{', '.join(sorted(category_listing.PLUGIN_TAGS))}",
            http_status=400,
        )
    language = params.get("language", "")
    if language and language not in category_listing.LIST_LANGUAGES:
        raise BadRequest(
            f"query parameter 'language' must be one of {', '.join(category_listing.LIST_LANGUAGES)}, got {language!r}",
            http_status=400,
        )
    return category_listing.ListFilters(query=text, tags=tuple(tags), language=language)


async def list_by_category(request: Request) -> Any:
    """``{category}/list``: the parameters are checked first (HTTP 400), then the category."""
    tenant_id = tenant(request)
    number = _bounded_int(request, "page", 1, 2**31 - 1)
    size = _bounded_int(request, "page_size", 1, 256)
    filters = _list_filters(request)
    category = request.path_params["category"]
    manager = daemon_of(request).manager
    return await in_thread(category_listing.list_plugins, manager, tenant_id, category, number, size, filters)


async def model_bindings(request: Request) -> Any:
    return await in_thread(category_listing.model_bindings, daemon_of(request).manager, tenant(request))


async def fetch_batch(request: Request) -> Any:
    body = await json_body(request)
    plugin_ids = field(body, "plugin_ids", list)
    if len(plugin_ids) > 256:
        raise BadRequest("at most 256 plugin_ids at once")
    return await in_thread(daemon_of(request).manager.installations_by_plugin_ids, tenant(request), plugin_ids)


async def missing(request: Request) -> Any:
    body = await json_body(request)
    identifiers = field(body, "plugin_unique_identifiers", list)
    return await in_thread(daemon_of(request).manager.missing, tenant(request), identifiers)


def category_list(key: str) -> Handler:
    async def handler(request: Request) -> Any:
        number, size = page(request)
        return await in_thread(daemon_of(request).manager.list_category, key, tenant(request), number, size)

    return handler


def category_item(key: str) -> Handler:
    async def handler(request: Request) -> Any:
        plugin_id = query(request, "plugin_id")
        provider = query(request, "provider")
        found = await in_thread(daemon_of(request).manager.category_provider, key, tenant(request), plugin_id, provider)
        if found is None:
            # PluginNotFoundError, as the Go daemon answers (Dify maps it to its own exception class)
            raise PluginNotFound(f"{key.replace('_', ' ')} provider {plugin_id}/{provider} is not installed")
        return found

    return handler


async def tools_check_existence(request: Request) -> Any:
    body = await json_body(request)
    providers = field(body, "provider_ids", list)
    if not all(isinstance(item, dict) for item in providers):
        raise BadRequest("provider_ids must be a list of {plugin_id, provider_name} objects")
    return await in_thread(daemon_of(request).manager.tools_exist, tenant(request), providers)


async def get_asset(request: Request) -> Response:
    data = await in_thread(daemon_of(request).manager.media.get, request.path_params["asset_id"])
    if data is None:  # Go answers an unknown asset id with HTTP 200 and an empty body (GetAsset)
        return Response(b"", status_code=200)
    return Response(data, media_type="application/octet-stream")


async def extensions(request: Request) -> Any:
    return [extension.as_dict() for extension in daemon_of(request).extensions.extensions]


def routes() -> list[Route]:
    base = "/plugin/{tenant_id}"
    m = f"{base}/management"
    table: list[tuple[str, Handler, list[str]]] = [
        (f"{m}/install/upload/package", upload_package, ["POST"]),
        (f"{base}{BUNDLE_UPLOAD_SUFFIX}", upload_bundle, ["POST"]),
        (f"{m}/install/identifiers", install_identifiers, ["POST"]),
        (f"{m}/install/upgrade", install_upgrade, ["POST"]),
        (f"{m}/install/tasks", list_tasks, ["GET"]),
        (f"{m}/install/tasks/delete_all", delete_all_tasks, ["POST"]),
        (f"{m}/install/tasks/{{task_id}}", get_task, ["GET"]),
        (f"{m}/install/tasks/{{task_id}}/delete", delete_task, ["POST"]),
        (f"{m}/install/tasks/{{task_id}}/delete/{{identifier:path}}", delete_task_item, ["POST"]),
        (f"{m}/decode/from_identifier", decode_from_identifier, ["GET", "POST"]),
        (f"{m}/fetch/manifest", fetch_manifest, ["GET"]),
        (f"{m}/fetch/identifier", fetch_identifier, ["GET"]),
        (f"{m}/fetch/readme", fetch_readme, ["GET"]),
        (f"{base}/extract-asset/", extract_asset, ["GET"]),
        (f"{m}/uninstall", uninstall, ["POST"]),
        (f"{m}/list", list_installations, ["GET"]),
        (f"{m}/installation/ids", installation_ids, ["GET"]),
        (f"{m}/installation/fetch/batch", fetch_batch, ["POST"]),
        (f"{m}/installation/missing", missing, ["POST"]),
        (f"{m}/tools", category_list("tool"), ["GET"]),
        (f"{m}/tool", category_item("tool"), ["GET"]),
        (f"{m}/tools/check_existence", tools_check_existence, ["POST"]),
        (f"{m}/models", category_list("model"), ["GET"]),
        (f"{m}/agent_strategies", category_list("agent_strategy"), ["GET"]),
        (f"{m}/agent_strategy", category_item("agent_strategy"), ["GET"]),
        (f"{m}/datasources", category_list("datasource"), ["GET"]),
        (f"{m}/datasource", category_item("datasource"), ["GET"]),
        (f"{m}/triggers", category_list("trigger"), ["GET"]),
        (f"{m}/trigger", category_item("trigger"), ["GET"]),
        (f"{m}/models/bindings", model_bindings, ["GET"]),
        # last: a fixed route of the form management/<word>/list, if one is added, must win
        (f"{m}/{{category}}/list", list_by_category, ["GET"]),
        ("/plugin/extensions", extensions, ["GET"]),
    ]
    result = [Route(path, enveloped(handler), methods=methods) for path, handler, methods in table]
    result.append(Route(f"{base}/asset/{{asset_id}}", get_asset, methods=["GET"]))
    return result
