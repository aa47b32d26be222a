"""Reading a plugin's socket without the 40 ms delayed-ACK stall.

The SDK writes each frame as two ``send()`` calls (the JSON, then ``\\n\\n``) on a socket with
Nagle's algorithm on, so its second write waits until the daemon acknowledges the first; Linux
delays that acknowledgement by up to 40 ms when it has nothing to send back. Asking for an
immediate ACK after every read (``TCP_QUICKACK``, which the kernel resets by itself) removes the
stall from every frame. Where the option does not exist this is a plain pass-through.
"""

from __future__ import annotations

import socket

from anyio.abc import ByteReceiveStream, SocketAttribute, SocketStream

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class QuickAckReceiveStream(ByteReceiveStream):
    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None) if _QUICKACK else None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._stream.receive(max_bytes)
        if self._socket is not None:
            try:
                self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
            except OSError:
                self._socket = None
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()
