"""Reading from peers that write each frame in two small pieces, without the delayed-ACK stall.

The dify_plugin SDK writes a frame as two ``send()`` calls (the JSON, then ``\\n\\n``; over HTTP,
each chunk of a chunked body) on sockets with Nagle's algorithm on, so its second write waits
until the reader acknowledges the first — and Linux delays that acknowledgement by up to 40 ms
when the reader has nothing to send back. Asking for an immediate ACK after every read
(``TCP_QUICKACK``, which the kernel turns off again by itself) removes that stall from every
frame. Where the option does not exist, everything here is a plain pass-through.
"""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import httpx
from anyio.abc import ByteReceiveStream, SocketAttribute, SocketStream

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _ack_now(sock: socket.socket | None) -> socket.socket | None:
    """Request an immediate ACK on ``sock``; returns None once the option is refused."""
    if sock is None or _QUICKACK is None:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except OSError:
        return None
    return sock


class QuickAckReceiveStream(ByteReceiveStream):
    """An anyio socket stream's receiving side, acknowledging every read at once."""

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None) if _QUICKACK else None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._stream.receive(max_bytes)
        self._socket = _ack_now(self._socket)
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


class _QuickAckNetworkStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, timeout)
        self._socket = _ack_now(self._socket)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return await self._stream.start_tls(*args, **kwargs)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _QuickAckBackend(httpcore.AnyIOBackend):
    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _QuickAckNetworkStream(await super().connect_tcp(*args, **kwargs))


def quickack_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections acknowledge every read at once (see the module doc)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(  # the one setting httpx does not expose
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_QuickAckBackend(),
    )
    return transport
