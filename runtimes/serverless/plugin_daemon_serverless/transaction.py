"""``POST /backwards-invocation/transaction``: a function's backwards call, answered over HTTP.

The function sends one ``session/invoke`` frame with header ``Dify-Plugin-Session-ID``; the
daemon answers it through the same backwards-invocation component as every runtime, as
``backwards_response`` lines (each followed by a blank line), with a bare blank line as a
heartbeat while a long call runs.

Like the Go daemon's, this route carries no ``X-Api-Key`` (the SDK sends none). What protects
it: the session id is a random UUID that only the function receives, and a call is accepted
only while that session is live and belongs to a serverless installation; the body is bounded
and the call has a deadline. Anything else gets the SessionNotFound answer of §3.3. A session
calls with its own plugin's declaration, so its manifest's permissions bound what it may do.
``SERVERLESS_TRANSACTION_ALLOWED_CIDRS`` narrows who may call at all: the address checked is
the peer's (or, behind a proxy uvicorn trusts through FORWARDED_ALLOW_IPS, X-Forwarded-For's).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from plugin_daemon.config import IPNetwork
from plugin_daemon.errors import PermissionDenied
from plugin_daemon.protocol.messages import SessionFrame, encode_backwards_response, parse_output_line
from plugin_daemon.runtime import EventKind, SessionChannel, SessionEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .runtime import NAME

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon
    from plugin_daemon.sessions import Session

log = logging.getLogger(__name__)

PATH = "/backwards-invocation/transaction"
SESSION_HEADER = "dify-plugin-session-id"
#: Seconds between two heartbeats (a bare blank line) while a call runs.
HEARTBEAT_INTERVAL = 25.0


class TransactionChannel(SessionChannel):
    """The HTTP response of one transaction, as the channel the backwards component answers on."""

    def __init__(self, session_id: str, send: Send) -> None:
        self.session_id = session_id
        self._send = send
        self._lock = anyio.Lock()
        self.broken = False

    async def send(self, line: bytes) -> None:
        await self.write(line + b"\n\n")

    async def write(self, data: bytes) -> None:
        async with self._lock:
            try:
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
            except Exception:
                self.broken = True
                raise

    async def __aiter__(self) -> AsyncIterator[SessionEvent]:  # type: ignore[override]
        return
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


class TransactionResponse:
    """Streams the answer of one backwards call (pure ASGI, so writes go out as they happen)."""

    def __init__(self, daemon: Daemon, session: Session, payload: Any) -> None:
        self.daemon = daemon
        self.session = session
        self.payload = payload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        channel = TransactionChannel(self.session.id, send)
        timeout = self.daemon.settings.MAX_SERVERLESS_TRANSACTION_TIMEOUT
        async with anyio.create_task_group() as group:
            group.start_soon(_heartbeat, channel)
            with anyio.move_on_after(timeout) as deadline:
                await self.daemon.backwards.handle(self.session, channel, self.payload)
            if deadline.cancelled_caught and not channel.broken:
                request_id = str(self.payload.get("backwards_request_id") or "")
                message = f"backwards invocation exceeded MAX_SERVERLESS_TRANSACTION_TIMEOUT ({timeout} s)"
                with contextlib.suppress(Exception):
                    await channel.send(encode_backwards_response(self.session.id, request_id, "error", message, None))
                    await channel.send(encode_backwards_response(self.session.id, request_id, "end", "", None))
            group.cancel_scope.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _heartbeat(channel: TransactionChannel) -> None:
    while not channel.broken:
        await anyio.sleep(HEARTBEAT_INTERVAL)
        try:
            await channel.write(b"\n\n")
        except Exception:
            return


def session_not_found(request_id: str, detail: str) -> Response:
    """The Go daemon's answer for an unknown session (HTTP 400)."""
    body = {
        "backwards_request_id": request_id,
        "event": "error",
        "message": "failed to get session info from cache",
        "data": {"error_type": "SessionNotFound", "message": detail},
    }
    return JSONResponse(body, status_code=400)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes (stops reading there)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _invoke_frame(body: bytes) -> SessionFrame | None:
    for line in body.split(b"\n"):
        if line.strip():
            frame = parse_output_line(line.strip())
            if isinstance(frame, SessionFrame) and frame.kind is EventKind.INVOKE and isinstance(frame.payload, dict):
                return frame
            return None
    return None


def source_allowed(host: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether a caller at ``host`` may use the route (any caller when no networks are set)."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False  # a Unix socket or an unknown peer: not in any network
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def source_refused(host: str | None) -> Response:
    error = PermissionDenied(
        f"source address {host or 'unknown'} may not call {PATH} (SERVERLESS_TRANSACTION_ALLOWED_CIDRS)"
    )
    return JSONResponse(error.envelope(), status_code=403)


async def transaction(request: Request) -> Response | TransactionResponse:
    daemon: Daemon = request.app.state.daemon
    host = request.client.host if request.client else None
    if not source_allowed(host, daemon.settings.transaction_networks):
        log.warning("refused a backwards call from %s: not in SERVERLESS_TRANSACTION_ALLOWED_CIDRS", host)
        return source_refused(host)
    limit = daemon.settings.MAX_SERVERLESS_TRANSACTION_BYTES
    session_id = request.headers.get(SESSION_HEADER, "")
    body = await _read_body(request, limit)
    if body is None:
        return JSONResponse(
            {"error": f"request body is larger than MAX_SERVERLESS_TRANSACTION_BYTES ({limit} bytes)"},
            status_code=413,
        )
    frame = _invoke_frame(body)
    if frame is None:
        return JSONResponse(
            {"error": "failed to parse request: expected one session frame of type invoke"}, status_code=400
        )
    request_id = str(frame.payload.get("backwards_request_id") or "")
    session = daemon.sessions.get(session_id) if session_id else None
    if session is None or session.runtime_type != NAME or session.state != "running":
        log.warning("refused a backwards call for session %r: not a live serverless session", session_id)
        return session_not_found(request_id, f"session {session_id!r} is not a live session of a serverless plugin")
    if frame.session_id not in (None, session_id):
        return session_not_found(request_id, "the frame's session_id differs from the Dify-Plugin-Session-ID header")
    session.touch()
    return TransactionResponse(daemon, session, frame.payload)
