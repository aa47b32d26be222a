"""HTTP connection limits: what a client may hold of the daemon, and for how long.

Named after the fields of Go's ``http.Server``:

- ``SERVER_READ_HEADER_TIMEOUT``: a request's headers must arrive within this many seconds of its
  first byte (of the connection, for a new one). A connection that sends nothing, or trickles its
  headers (slowloris), is closed.
- ``SERVER_READ_TIMEOUT``: the whole request, body included, within this many seconds of its first byte.
- ``SERVER_IDLE_TIMEOUT``: a keep-alive connection waiting for its next request is closed after this.
- ``SERVER_MAX_CONCURRENT_REQUESTS`` (Go has none): requests served at once; the next one is
  answered 503 in Dify's envelope at once, instead of queueing until the process runs out of files.

The timeouts live in the HTTP protocol (a subclass of uvicorn's httptools protocol); the cap is a
pure ASGI middleware. Both cost one timer or one counter per request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from plugin_daemon.api.middleware import send_error
from plugin_daemon.errors import DaemonError, InternalError

if TYPE_CHECKING:
    from plugin_daemon.config import Settings
    from plugin_daemon.shutdown import Shutdown

log = logging.getLogger(__name__)


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request (headers, then body)."""

    header_timeout: float = 10.0
    read_timeout: float = 60.0
    _read_deadline: asyncio.TimerHandle | None = None
    _request_started = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_started = self.loop.time()
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # a new connection's deadline runs from the connection
            self._request_started = self.loop.time()
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        # the body (if any) by the end of the read timeout, counted from the request's first byte
        self._arm(self._request_started + self.read_timeout - self.loop.time())

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._read_deadline = self.loop.call_later(max(seconds, 0.0), self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            log.debug("closing a connection from %s: request not read in time", self.client)
            self.transport.close()


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one, as Go's runtime does at start: each
    connection is a file, and a soft limit of 1,024 lets a thousand idle clients refuse everyone
    else until their timeouts close them. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def http_limits(settings: Settings) -> dict[str, Any]:
    """The ``uvicorn.Config`` options that apply the read and idle timeouts of ``settings``."""
    protocol = type(
        "TimedHttpToolsProtocol",
        (TimedHttpToolsProtocol,),
        {"header_timeout": settings.SERVER_READ_HEADER_TIMEOUT, "read_timeout": settings.SERVER_READ_TIMEOUT},
    )
    return {"http": protocol, "timeout_keep_alive": settings.SERVER_IDLE_TIMEOUT}


class Overloaded(InternalError):
    code = -503
    http_status = 503


class ConcurrencyLimitMiddleware:
    """Answers 503 (Dify's envelope) past ``limit`` requests in flight (0 = no cap), and to every
    request once the daemon is shutting down."""

    def __init__(self, app: ASGIApp, limit: int, shutdown: Shutdown) -> None:
        self.app = app
        self.limit = limit or 1 << 62
        self.shutdown = shutdown
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit or self.shutdown.draining:
            error = self._refusal()
            await send_error(send, error, error.http_status)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refusal(self) -> DaemonError:
        if self.shutdown.draining:
            return self.shutdown.refusal()
        return Overloaded(
            f"server is busy: {self.in_flight} requests in flight (SERVER_MAX_CONCURRENT_REQUESTS); try again later"
        )
