"""Pure ASGI middleware: the X-Api-Key check and the request body limit."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plugin_daemon.errors import BadRequest, DaemonError, Unauthorized

#: Paths that carry the X-Api-Key check (the Go daemon's protected groups).
PROTECTED_PREFIXES = ("/plugin/", "/v2/invoke/")


async def send_error(send: Send, error: DaemonError, status: int) -> None:
    """Answer ``error`` in Dify's envelope with HTTP ``status``, before anything else was sent."""
    body = orjson.dumps(error.envelope())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Rejects requests to protected paths whose ``X-Api-Key`` is not the server key (401)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES):
            supplied = b""
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    supplied = value
                    break
            if not hmac.compare_digest(supplied, self.key):
                await send_error(send, Unauthorized("unauthorized"), 401)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes (413), by Content-Length or while streaming.

    ``limits_by_suffix`` gives paths ending so a limit of their own (a bundle upload is larger
    than any other request).
    """

    def __init__(self, app: ASGIApp, limit: int, limits_by_suffix: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_limit = limit
        self.limits_by_suffix = tuple((limits_by_suffix or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.default_limit
        for suffix, special in self.limits_by_suffix:
            if scope["path"].endswith(suffix):
                limit = special
        declared = -1
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
                if declared > limit:
                    await send_error(send, _too_large(limit), 413)
                    return
            elif name == b"transfer-encoding":
                declared = -1  # chunked: the length is only known while reading
                break
        if declared >= 0:
            # The server reads exactly Content-Length bytes of body: nothing more to watch.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await send_error(send, _too_large(limit), 413)


def _too_large(limit: int) -> BadRequest:
    return BadRequest(f"request body is larger than the limit of {limit} bytes")


class BodyTooLarge(Exception):
    pass
