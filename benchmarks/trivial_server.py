"""A trivial HTTP/1.1 server: answers every request with a canned SSE body, as fast as it can.

Run as a process of its own (``python benchmarks/trivial_server.py PORT``); it prints ``ready``
once listening. The benchmark measures the load generator's ceiling against it: whatever the
generator reaches here is more than it can ask of the daemon.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

# The daemon's answer to the echo tool, in size and shape: two SSE events, chunked.
_EVENTS = (b'data: {"code":0,"message":"success","data":{"type":"text","message":{"text":"hello"},"meta":null}}\n\n',)
_BODY = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in _EVENTS) + b"0\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n" + _BODY
)


class TrivialProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self.buffer = buffer
        if answers and self.transport is not None:
            self.transport.write(RESPONSE * answers)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
