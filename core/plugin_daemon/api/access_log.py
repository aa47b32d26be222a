"""The access log (``ACCESS_LOG=true`` or ``serve --access-log``): one line per HTTP request.

Logged by ``plugin_daemon.access`` when the answer is over (a stream: when it ends): client
address, method, path (no query string, no header: nothing secret), status, bytes sent and
milliseconds taken. In the JSON log these are attributes of the record.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("plugin_daemon.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client")
            address = f"{client[0]}:{client[1]}" if client else "-"
            milliseconds = (time.perf_counter() - started) * 1000
            method, path = scope["method"], scope["path"]
            log.info(
                '%s "%s %s" %s %d B %.1f ms',
                address,
                method,
                path,
                status or "-",
                sent,
                milliseconds,
                extra={
                    "client": address,
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round(milliseconds, 3),
                },
            )
