"""A trivial plugin process: answers every request line on stdin with a canned echo answer.

Run as a process of its own (``python benchmarks/trivial_plugin.py``); it writes a heartbeat
first, as the SDK does. The benchmark drives it with the same client it uses straight to a real
plugin (:class:`direct.DirectPlugin`): what the client reaches here is its own ceiling, so a
direct figure far below it is the plugin's, not the client's.
"""

from __future__ import annotations

import asyncio
import sys

import orjson

HEARTBEAT = b'{"event":"heartbeat","session_id":null,"data":{}}\n'
# The echo tool's answer, in size and shape: one stream message, then the end of the session.
_STREAM = {"type": "stream", "data": {"type": "text", "message": {"text": "hello"}, "meta": None}}
_END = {"type": "end", "data": None}


def answer(session_id: str) -> bytes:
    return b"".join(
        orjson.dumps({"session_id": session_id, "event": "session", "data": data}) + b"\n" for data in (_STREAM, _END)
    )


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    transport.write(HEARTBEAT)
    while line := await reader.readline():
        if line.strip():
            transport.write(answer(orjson.loads(line)["session_id"]))


def main() -> None:
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(serve())


if __name__ == "__main__":
    main()
