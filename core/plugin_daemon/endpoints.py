"""Plugin endpoints: public webhooks served by plugins.

A tenant sets up an endpoint of an installed plugin; a random ``hook_id`` names it. A request to
``/e/{hook_id}/<path>`` is re-serialized as raw HTTP/1.1 and handed to the plugin in an ``endpoint``
session, opened exactly as dispatch opens one (:func:`plugin_daemon.dispatch.start_session`). The
plugin answers ``{"status", "headers"}`` and then ``{"result": <hex body chunk>}`` items, which go
back to the caller as they arrive. Secret-input settings are stored encrypted by Dify (inner API
``invoke/encrypt``) and decrypted for each call.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from sqlalchemy import select, update
from sqlalchemy.sql import Update

from plugin_daemon.backwards.dify_client import DifyCallError, timeout_message
from plugin_daemon.dispatch import Access, start_session
from plugin_daemon.errors import (
    BadRequest,
    DaemonError,
    InternalError,
    NotFound,
    PermissionDenied,
    PluginNotFound,
)
from plugin_daemon.manager import Installation, _iso, parse_identifier
from plugin_daemon.store.models import EndpointRow, InstallationRow, new_id

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

ENDPOINT_ACCESS = Access("endpoint", "invoke_endpoint")
#: Largest request body handed to a plugin (as the Go daemon).
MAX_ENDPOINT_BODY = 10 * 1024 * 1024
#: The Go daemon's expiry of every endpoint.
EXPIRES_AT = datetime(2050, 1, 1, tzinfo=UTC)
MAX_NAME_LENGTH = 127
MAX_SETTINGS = 64
SECRET_INPUT = "secret-input"
EMPTY_DECLARATION: dict[str, Any] = {"settings": [], "endpoints": []}

#: Request headers a plugin never sees: they reveal the caller's addresses (plus any X-Original-*).
STRIPPED_HEADERS = frozenset({"x-forwarded-for", "x-real-ip", "x-forwarded"})
STRIPPED_PREFIX = "x-original-"
#: Request headers the re-serialized request sets itself.
REFRAMED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "dify-hook-id"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Response headers of the plugin that belong to the daemon's own connection.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"})
SSE_PREFIX = b"data: "

#: setting type -> keys its (object) value must have
SELECTOR_KEYS: dict[str, tuple[str, ...]] = {
    "app-selector": ("app_id",),
    "model-selector": ("provider", "model", "model_type"),
}


# --- the request a plugin gets ---------------------------------------------------------------
@dataclass(frozen=True)
class IncomingRequest:
    """A request to ``/e/{hook_id}<path>``, as received."""

    method: str
    path: str  # after the hook id, percent-encoded as received, starting with "/"
    query: str  # raw query string, without "?"
    headers: list[tuple[str, str]]
    body: bytes


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in headers if key.lower() == name), "")


def _canonical(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _passed_on(name: str) -> bool:
    lower = name.lower()
    return not (lower in STRIPPED_HEADERS or lower in REFRAMED_HEADERS or lower.startswith(STRIPPED_PREFIX))


def serialize_request(request: IncomingRequest, hook_id: str) -> bytes:
    """The raw HTTP/1.1 bytes of ``request`` as the plugin sees it (protocol.md §4.3, Endpoints)."""
    host = _header(request.headers, "x-original-host") or _header(request.headers, "host") or "localhost"
    target = request.path + (f"?{request.query}" if request.query else "")
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{_canonical(name)}: {value}" for name, value in request.headers if _passed_on(name)]
    if request.body or request.method in BODY_METHODS:
        lines.append(f"Content-Length: {len(request.body)}")
    lines.append(f"Dify-Hook-Id: {hook_id}")
    if not _header(request.headers, "dify-hook-url"):
        scheme = "https" if _header(request.headers, "x-forwarded-proto").lower() == "https" else "http"
        lines.append(f"Dify-Hook-Url: {scheme}://{host}/e/{hook_id}{request.path}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


# --- the answer a caller gets ----------------------------------------------------------------
@dataclass
class EndpointResponse:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class EndpointStreamBroken(Exception):
    """The plugin failed after its answer had begun; the caller's connection is cut."""


def _forwarded_failure(envelope: dict[str, Any]) -> DaemonError:
    """The error of a failure envelope coming out of a session, raised again as itself."""
    try:
        inner = orjson.loads(envelope.get("message") or "{}")
    except orjson.JSONDecodeError:
        inner = {"message": str(envelope.get("message"))}
    error = DaemonError(str(inner.get("message", "")), args=inner.get("args"), http_status=500)
    error.code = int(envelope.get("code") or -500)
    error.error_type = str(inner.get("error_type") or DaemonError.error_type)
    return error


async def _session_items(stream: AsyncIterator[bytes]) -> AsyncGenerator[Any, None]:
    """The items of a session's SSE stream; a failure event is raised."""
    try:
        async for event in stream:
            envelope = orjson.loads(event[len(SSE_PREFIX) :])
            if envelope.get("code") != 0:
                raise _forwarded_failure(envelope)
            yield envelope.get("data")
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()  # the session drains on without us


def _response_chunk(item: Any) -> tuple[int | None, dict[str, str], bytes | None]:
    """Status, headers and body bytes of one ``EndpointResponseChunk``."""
    if not isinstance(item, dict):
        raise InternalError(f"the plugin answered {type(item).__name__} instead of an endpoint response chunk")
    status = item.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise InternalError(f"the plugin answered an invalid HTTP status: {status!r}")
    headers = item.get("headers") or {}
    if not isinstance(headers, dict):
        raise InternalError("the plugin answered headers that are not an object")
    kept = {str(name): str(value) for name, value in headers.items() if _sendable_header(str(name), str(value))}
    result = item.get("result")
    if result is None:
        return status, kept, None
    if not isinstance(result, str):
        raise InternalError("the plugin answered a body chunk that is not a hex string")
    try:
        return status, kept, bytes.fromhex(result)
    except ValueError:
        raise InternalError("the plugin answered a body chunk that is not hex") from None


def _sendable_header(name: str, value: str) -> bool:
    if name.lower() in HOP_BY_HOP or "\r" in name + value or "\n" in name + value:
        return False
    try:
        (name + value).encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


async def _plugin_answer(items: AsyncGenerator[Any, None]) -> EndpointResponse:
    """Read items up to the first body chunk: status and headers come before it."""
    status: int | None = None
    headers: dict[str, str] = {}
    first: bytes | None = None
    answered = False
    try:
        async for item in items:
            answered = True
            item_status, item_headers, first = _response_chunk(item)
            status = status if item_status is None else item_status
            headers.update(item_headers)
            if first is not None:
                break
    except BaseException:
        await items.aclose()
        raise
    if not answered:
        raise InternalError("the plugin ended the endpoint call without answering")
    return EndpointResponse(status or 200, headers, _body(first, items))


async def _body(first: bytes | None, items: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for item in items:
            _, _, chunk = _response_chunk(item)
            if chunk:
                yield chunk
    except DaemonError as exc:
        raise EndpointStreamBroken(f"the plugin failed while answering an endpoint call: {exc.message}") from exc
    finally:
        await items.aclose()


# --- settings --------------------------------------------------------------------------------
def _setting_problem(config: Mapping[str, Any], value: Any) -> str | None:
    kind = config.get("type")
    if kind in ("text-input", SECRET_INPUT, "select") and not isinstance(value, str):
        return "is not a string"
    if kind == "select" and value not in {option.get("value") for option in config.get("options") or []}:
        return "is not a valid option"
    if kind == "boolean" and not isinstance(value, bool):
        return "is not a boolean"
    if kind in SELECTOR_KEYS:
        if not isinstance(value, dict):
            return "is not a map"
        missing = [key for key in SELECTOR_KEYS[kind] if key not in value]
        if missing:
            return f"is missing {missing[0]}"
    return None


def validate_settings(settings: Mapping[str, Any], schema: list[dict[str, Any]]) -> None:
    """The Go daemon's checks of endpoint settings against the group's ``settings`` schema."""
    if len(settings) > MAX_SETTINGS:
        raise BadRequest("failed to validate settings: too many setting fields")
    for config in schema:
        name = config.get("name")
        value = settings.get(name) if isinstance(name, str) else None
        if value is None:
            if config.get("required"):
                raise BadRequest(f"failed to validate settings: missing required setting: {name}")
            continue
        problem = _setting_problem(config, value)
        if problem:
            raise BadRequest(f"failed to validate settings: setting {name} {problem}")


def _secret_names(schema: list[dict[str, Any]]) -> set[str]:
    return {str(config.get("name")) for config in schema if config.get("type") == SECRET_INPUT}


def mask_secrets(settings: Mapping[str, Any], schema: list[dict[str, Any]]) -> dict[str, Any]:
    """Secret-input string values masked as Dify shows them (``ab****yz``)."""
    secret = _secret_names(schema)
    return {name: _masked(value) if name in secret else value for name, value in settings.items()}


def _masked(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > 6:
        return value[:2] + "*" * (len(value) - 4) + value[-2:]
    return "*" * len(value)


def _unmask(settings: dict[str, Any], original: Mapping[str, Any], schema: list[dict[str, Any]]) -> dict[str, Any]:
    """A secret sent back in its masked form means "unchanged": keep the original value."""
    kept = dict(settings)
    for name in _secret_names(schema):
        if name in kept and name in original and kept[name] == _masked(original[name]):
            kept[name] = original[name]
    return kept


def _schema(group: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [config for config in group.get("settings") or [] if isinstance(config, dict)]


def has_endpoint_permission(declaration: Mapping[str, Any]) -> bool:
    permission = (declaration.get("resource") or {}).get("permission") or {}
    return bool((permission.get("endpoint") or {}).get("enabled"))


def new_hook_id() -> str:
    return secrets.token_hex(16)


# --- the service -----------------------------------------------------------------------------
#: the widths of the endpoints table's columns in the Go daemon's schema
COLUMN_WIDTHS = {"plugin_id": 64, "user_id": 64}


def check_widths(**values: str) -> None:
    """Refuse plainly what the endpoints table (as the Go daemon's schema has it) cannot hold."""
    for column, value in values.items():
        if len(value) > COLUMN_WIDTHS[column]:
            raise BadRequest(f"endpoint {column} is {len(value)} characters long, the limit is {COLUMN_WIDTHS[column]}")


class EndpointService:
    """Endpoints of every tenant: persistence, settings encryption and public invocation."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.db = daemon.database

    # management --------------------------------------------------------------------------
    async def setup(self, tenant_id: str, user_id: str, identifier: str, name: str, settings: dict[str, Any]) -> bool:
        plugin_id = parse_identifier(identifier).plugin_id
        installation = await self._installation(tenant_id, plugin_id)
        if installation is None or installation.identifier != identifier:
            raise PluginNotFound("plugin not found")
        declaration = await self._declaration(installation)
        if not has_endpoint_permission(declaration):
            raise PermissionDenied("permission denied, you need to enable endpoint access in plugin manifest")
        group = declaration.get("endpoint")
        if not group:
            raise BadRequest("plugin does not have an endpoint")
        validate_settings(settings, _schema(group))
        check_widths(plugin_id=plugin_id, user_id=user_id)
        endpoint_id = new_id()
        stored = await self._crypt("encrypt", tenant_id, user_id, endpoint_id, settings, group)
        row = EndpointRow(
            id=endpoint_id,
            name=name,
            hook_id=new_hook_id(),
            tenant_id=tenant_id,
            user_id=user_id,
            plugin_id=plugin_id,
            expired_at=EXPIRES_AT,
            enabled=True,
            settings=stored,
        )
        await anyio.to_thread.run_sync(self._insert, row)
        return True

    async def update(self, tenant_id: str, user_id: str, endpoint_id: str, name: str, settings: dict[str, Any]) -> bool:
        row = await self._endpoint(tenant_id, endpoint_id)
        group = await self._group_of(tenant_id, row.plugin_id)
        if group is None:
            raise BadRequest("plugin does not have an endpoint")
        original = await self._crypt("decrypt", tenant_id, user_id, row.id, row.settings, group)
        settings = _unmask(settings, original, _schema(group))
        validate_settings(settings, _schema(group))
        stored = await self._crypt("encrypt", tenant_id, user_id, row.id, settings, group)
        await anyio.to_thread.run_sync(self._save, tenant_id, endpoint_id, name, stored)
        await self._crypt("clear", tenant_id, user_id, row.id, settings, group)
        return True

    async def remove(self, tenant_id: str, endpoint_id: str) -> bool:
        """Remove an endpoint; removing one that is gone already is a success (Dify retries removals)."""
        row = await anyio.to_thread.run_sync(self._delete, tenant_id, endpoint_id)
        if row is not None:
            await self._clear_quietly(row)
        return True

    async def set_enabled(self, tenant_id: str, endpoint_id: str, enabled: bool) -> bool:
        if not await anyio.to_thread.run_sync(self._set_enabled, tenant_id, endpoint_id, enabled):
            raise NotFound(f"endpoint {endpoint_id} not found")
        return True

    async def list_endpoints(
        self, tenant_id: str, page: int, page_size: int, plugin_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A page of the tenant's endpoints (of one plugin), newest first, secrets masked."""
        rows = await anyio.to_thread.run_sync(self._page, tenant_id, plugin_id, page, page_size)
        groups: dict[str, dict[str, Any] | None] = {}
        for row in rows:
            if row.plugin_id not in groups:
                groups[row.plugin_id] = await self._group_of(tenant_id, row.plugin_id, required=plugin_id is not None)
        entities: list[dict[str, Any]] = [{} for _ in rows]
        failures: list[DaemonError] = []

        async def describe(index: int, row: EndpointRow) -> None:
            try:
                entities[index] = await self._entity(row, groups[row.plugin_id])
            except DaemonError as exc:  # the caller gets it as it is, not inside an exception group
                failures.append(exc)

        async with anyio.create_task_group() as group:
            for index, row in enumerate(rows):
                group.start_soon(describe, index, row)
        if failures:
            raise failures[0]
        return entities

    async def _entity(self, row: EndpointRow, group: dict[str, Any] | None) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if group is not None:
            decrypted = await self._crypt("decrypt", row.tenant_id, "", row.id, row.settings, group)
            settings = mask_secrets(decrypted, _schema(group))
        return {
            "id": row.id,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "name": row.name,
            "hook_id": row.hook_id,
            "tenant_id": row.tenant_id,
            "user_id": row.user_id,
            "plugin_id": row.plugin_id,
            "expired_at": _iso(row.expired_at),
            "enabled": row.enabled,
            "settings": settings,
            "declaration": group if group is not None else EMPTY_DECLARATION,
        }

    # invocation --------------------------------------------------------------------------
    async def invoke(self, hook_id: str, request: IncomingRequest) -> EndpointResponse:
        """Hand ``request`` to the endpoint's plugin; its status and headers are known on return."""
        row = await anyio.to_thread.run_sync(self._by_hook, hook_id)
        if row is None or not row.enabled:
            raise NotFound("endpoint not found", http_status=404)
        installation = await self._installation(row.tenant_id, row.plugin_id)
        if installation is None:
            raise NotFound("plugin installation not found", http_status=404)
        group = (await self._declaration(installation)).get("endpoint")
        if not group:
            raise PluginNotFound(f"plugin {installation.identifier} has no endpoint group", http_status=404)
        settings = await self._crypt("decrypt", row.tenant_id, "", row.id, row.settings, group)
        raw = serialize_request(request, row.hook_id)
        stream = await start_session(
            self.daemon,
            tenant_id=row.tenant_id,
            user_id="",
            plugin_id=row.plugin_id,
            identifier=installation.identifier,
            runtime_type=installation.runtime_type,
            access=ENDPOINT_ACCESS,
            body={"data": {"raw_http_request": raw.hex(), "settings": settings}, "endpoint_id": row.id},
        )
        return await _plugin_answer(_session_items(stream))

    # helpers -----------------------------------------------------------------------------
    async def _installation(self, tenant_id: str, plugin_id: str) -> Installation | None:
        return await anyio.to_thread.run_sync(self.daemon.manager.installation, tenant_id, plugin_id)

    async def _declaration(self, installation: Installation) -> dict[str, Any]:
        try:
            return (await self.daemon.control_panel.spec(installation.identifier)).declaration
        except NotFound:
            raise PluginNotFound("plugin not found") from None

    async def _group_of(self, tenant_id: str, plugin_id: str, *, required: bool = True) -> dict[str, Any] | None:
        """The endpoint group of the tenant's installation of ``plugin_id`` (None: none, or not installed)."""
        installation = await self._installation(tenant_id, plugin_id)
        if installation is None:
            if required:
                raise NotFound(f"plugin {plugin_id} is not installed for tenant {tenant_id}")
            return None
        group = (await self._declaration(installation)).get("endpoint")
        return group if isinstance(group, dict) and group else None

    async def _endpoint(self, tenant_id: str, endpoint_id: str) -> EndpointRow:
        row = await anyio.to_thread.run_sync(self._get, tenant_id, endpoint_id)
        if row is None:
            raise NotFound(f"endpoint {endpoint_id} not found")
        return row

    async def _crypt(
        self, opt: str, tenant_id: str, user_id: str, endpoint_id: str, data: dict[str, Any], group: dict[str, Any]
    ) -> dict[str, Any]:
        """Dify's ``invoke/encrypt`` (encrypt, decrypt or clear); skipped without secret-input settings."""
        schema = _schema(group)
        if not _secret_names(schema):
            return data
        body = {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "type": "encrypt",
            "opt": opt,
            "namespace": "endpoint",
            "identity": endpoint_id,
            "data": data,
            "config": schema,
        }
        dify = self.daemon.backwards.dify
        try:
            with anyio.fail_after(dify.read_deadline):
                reply = await dify.call("invoke/encrypt", body)
        except DifyCallError as exc:
            raise InternalError(f"failed to {opt} endpoint settings: {exc}") from None
        except TimeoutError:
            raise InternalError(f"failed to {opt} endpoint settings: {timeout_message(dify.read_deadline)}") from None
        result = reply.get("data") if isinstance(reply, dict) else None
        if isinstance(result, dict):
            return result
        if opt == "clear":
            return {}
        raise InternalError(f"Dify answered invoke/encrypt ({opt}) without settings")

    async def _clear_quietly(self, row: EndpointRow) -> None:
        """Drop Dify's cached credentials of a removed endpoint; the removal stands if this fails."""
        try:
            group = await self._group_of(row.tenant_id, row.plugin_id, required=False)
            if group is not None:
                await self._crypt("clear", row.tenant_id, "", row.id, {}, group)
        except DaemonError as exc:
            log.warning("endpoint %s removed, but its cached credentials were not cleared: %s", row.id, exc.message)

    # persistence (synchronous; called in worker threads) ---------------------------------
    @staticmethod
    def _counters(tenant_id: str, plugin_id: str, *, setups: int = 0, active: int = 0) -> Update:
        return (
            update(InstallationRow)
            .where(InstallationRow.tenant_id == tenant_id, InstallationRow.plugin_id == plugin_id)
            .values(
                endpoints_setups=InstallationRow.endpoints_setups + setups,
                endpoints_active=InstallationRow.endpoints_active + active,
            )
        )

    def _insert(self, row: EndpointRow) -> None:
        with self.db.transaction() as session:
            session.add(row)
            session.execute(self._counters(row.tenant_id, row.plugin_id, setups=1, active=1))

    def _get(self, tenant_id: str, endpoint_id: str) -> EndpointRow | None:
        with self.db.transaction() as session:
            return session.scalar(
                select(EndpointRow).where(EndpointRow.id == endpoint_id, EndpointRow.tenant_id == tenant_id)
            )

    def _by_hook(self, hook_id: str) -> EndpointRow | None:
        with self.db.transaction() as session:
            return session.scalar(select(EndpointRow).where(EndpointRow.hook_id == hook_id))

    def _save(self, tenant_id: str, endpoint_id: str, name: str, settings: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            session.execute(
                update(EndpointRow)
                .where(EndpointRow.id == endpoint_id, EndpointRow.tenant_id == tenant_id)
                .values(name=name, settings=settings)
            )

    def _set_enabled(self, tenant_id: str, endpoint_id: str, enabled: bool) -> bool:
        """Enable or disable; the active counter moves only when the state changes. False: no such endpoint."""
        with self.db.transaction() as session:
            changed = session.execute(
                update(EndpointRow)
                .where(
                    EndpointRow.id == endpoint_id,
                    EndpointRow.tenant_id == tenant_id,
                    EndpointRow.enabled.is_(not enabled),
                )
                .values(enabled=enabled)
            )
            row = session.scalar(
                select(EndpointRow).where(EndpointRow.id == endpoint_id, EndpointRow.tenant_id == tenant_id)
            )
            if row is None:
                return False
            if changed.rowcount:  # type: ignore[attr-defined]
                session.execute(self._counters(tenant_id, row.plugin_id, active=1 if enabled else -1))
            return True

    def _delete(self, tenant_id: str, endpoint_id: str) -> EndpointRow | None:
        with self.db.transaction() as session:
            row = session.scalar(
                select(EndpointRow)
                .where(EndpointRow.id == endpoint_id, EndpointRow.tenant_id == tenant_id)
                .with_for_update()
            )
            if row is None:
                return None
            session.delete(row)
            session.execute(self._counters(tenant_id, row.plugin_id, setups=-1, active=-1 if row.enabled else 0))
            return row

    def _page(self, tenant_id: str, plugin_id: str | None, page: int, page_size: int) -> list[EndpointRow]:
        query = select(EndpointRow).where(EndpointRow.tenant_id == tenant_id)
        if plugin_id is not None:
            query = query.where(EndpointRow.plugin_id == plugin_id)
        query = query.order_by(EndpointRow.created_at.desc(), EndpointRow.id).offset((page - 1) * page_size)
        with self.db.transaction() as session:
            return list(session.scalars(query.limit(page_size)))
