"""The connector's HTTP app: the SRI routes, the provider's own routes, and the key check."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..sri import FAILED, LaunchEvent
from .options import ConnectorOptions
from .provider import Provider

log = logging.getLogger(__name__)

#: ``author@name@version@checksum.difypkg``
FILENAME_RE = re.compile(
    r"[a-z0-9_-]{0,64}@[a-z0-9_-]{1,255}@[0-9]{1,4}(\.[0-9]{1,4}){1,3}(-\w{1,16})?@[a-f0-9]{32,64}\.difypkg"
)
#: Paths that need the connector's key.
PROTECTED_PREFIXES = ("/ping", "/v1/")


class KeyMiddleware:
    """The raw ``Authorization`` header must be the key (``Bearer <key>`` is accepted too)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES):
            supplied = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if supplied.startswith(b"Bearer "):
                supplied = supplied[7:]
            if not hmac.compare_digest(supplied, self.key):
                response = JSONResponse({"error": "unauthorized"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_connector_app(provider: Provider, options: ConnectorOptions) -> Starlette:
    """The connector as an ASGI app; its lifespan runs the provider."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            await group.start(provider.serve)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await provider.aclose()

    async def ping(request: Request) -> Response:
        return JSONResponse("pong")

    async def instances(request: Request) -> Response:
        filename = request.query_params.get("filename", "")
        if not FILENAME_RE.fullmatch(filename):
            return JSONResponse({"error": f"invalid filename {filename!r}", "Items": []}, status_code=400)
        found = await provider.find(filename)
        # Go's RunnerInstances spells the list "Items" (its decoder would take any case)
        return JSONResponse({"error": "", "Items": [found.as_item()] if found else []})

    async def launch(request: Request) -> Response:
        try:
            filename, package, verified, metadata = await _launch_form(request, options.max_package_size)
        except LaunchRefused as exc:
            return StreamingResponse(_one(LaunchEvent("healthz", FAILED, str(exc))), media_type="text/event-stream")
        events = provider.launch(filename, package, verified=verified, metadata=metadata)
        return StreamingResponse(_encoded(events), media_type="text/event-stream")

    async def describe(request: Request) -> Response:
        return JSONResponse(provider.describe())

    routes = [
        Route("/ping", ping, methods=["GET", "POST"]),
        Route("/v1/runner/instances", instances, methods=["GET"]),
        Route("/v1/launch", launch, methods=["POST"]),
        Route("/v1/connector", describe, methods=["GET"]),
        *provider.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.provider = provider
    app.add_middleware(KeyMiddleware, key=options.api_key)
    return app


class LaunchRefused(Exception):
    pass


async def _launch_form(request: Request, max_size: int) -> tuple[str, bytes, bool, dict[str, Any]]:
    try:
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("context")
            if not isinstance(upload, UploadFile):
                raise LaunchRefused("the multipart field 'context' (the .difypkg) is missing")
            filename = upload.filename or ""
            package = await upload.read(max_size + 1)
            verified = str(form.get("verified") or "").lower() == "true"
            raw_metadata = form.get("metadata")
    except LaunchRefused:
        raise
    except Exception as exc:
        raise LaunchRefused(f"unreadable launch request: {exc}") from exc
    if len(package) > max_size:
        raise LaunchRefused(f"the package is larger than {max_size} bytes")
    if not FILENAME_RE.fullmatch(filename):
        raise LaunchRefused(f"invalid package filename {filename!r} (want author@name@version@checksum.difypkg)")
    metadata: dict[str, Any] = {}
    if isinstance(raw_metadata, str) and raw_metadata:
        try:
            parsed = orjson.loads(raw_metadata)
        except orjson.JSONDecodeError as exc:
            raise LaunchRefused(f"metadata is not JSON: {exc}") from exc
        metadata = parsed if isinstance(parsed, dict) else {}
    return filename, package, verified, metadata


async def _encoded(events: AsyncIterator[LaunchEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.encode()


async def _one(event: LaunchEvent) -> AsyncIterator[bytes]:
    yield event.encode()
