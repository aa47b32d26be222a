"""Reading what a caller sent: JSON bodies, query parameters, the tenant in the path."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from plugin_daemon.errors import BadRequest
from plugin_daemon.store.types import is_uuid


async def json_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    if not raw:
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is required")
        return None
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(f"field {name!r} must be a {expected}")
    return value


def query(request: Request, name: str, *, required: bool = True) -> str:
    value = request.query_params.get(name)
    if not value and required:
        raise BadRequest(f"query parameter {name!r} is required")
    return value or ""


def page(request: Request, *, max_size: int = 256) -> tuple[int, int]:
    try:
        number = int(request.query_params.get("page", "1"))
        size = int(request.query_params.get("page_size", "256"))
    except ValueError:
        raise BadRequest("page and page_size must be integers") from None
    if number < 1 or size < 1 or size > max_size:
        raise BadRequest(f"page must be >= 1 and page_size between 1 and {max_size}")
    return number, size


def tenant(request: Request) -> str:
    return check_tenant(
        request.path_params["tenant_id"], uuid_only=request.app.state.daemon.database.tenant_ids_are_uuids
    )


def check_tenant(tenant_id: str, *, uuid_only: bool = False) -> str:
    """Dify's tenant ids are UUIDs; where the database stores them as such (the Go daemon's schema on
    PostgreSQL and MySQL) nothing else can be taken."""
    if not tenant_id or len(tenant_id) > 64:
        raise BadRequest("tenant_id must be 1 to 64 characters")
    if uuid_only and not is_uuid(tenant_id):
        raise BadRequest(f"tenant_id {tenant_id!r} is not a UUID; this database stores tenant ids as uuid")
    return tenant_id
