"""SessionRouter on its own: routing by session id, heartbeats, logs, oversize lines, fail_all."""

from __future__ import annotations

import logging

import anyio
import orjson
import pytest
from plugin_daemon.protocol.framing import OversizeLine
from plugin_daemon.protocol.router import SessionRouter
from plugin_daemon.runtime import EventKind

pytestmark = pytest.mark.anyio


class Wire:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.heartbeats = 0
        self.notes: list[tuple[int, str]] = []

    async def write(self, line: bytes) -> None:
        self.written.append(line)

    def router(self) -> SessionRouter:
        def beat() -> None:
            self.heartbeats += 1

        return SessionRouter(
            "t/p",
            self.write,
            max_line=100,
            logger=logging.getLogger("plugin.t/p"),
            on_heartbeat=beat,
            on_note=lambda level, message: self.notes.append((level, message)),
        )


def frame(session_id: str, kind: str, data: object) -> bytes:
    return orjson.dumps({"event": "session", "session_id": session_id, "data": {"type": kind, "data": data}})


async def test_frames_reach_their_session_only() -> None:
    wire = Wire()
    router = wire.router()
    a = await router.open_session("a", b"request-a")
    b = await router.open_session("b", b"request-b")
    assert wire.written == [b"request-a", b"request-b"]
    router.feed(frame("a", "stream", {"n": 1}))
    router.feed(frame("b", "stream", {"n": 2}))
    router.feed(frame("a", "end", {}))
    router.feed(frame("nobody", "stream", {}))  # dropped quietly
    with anyio.fail_after(1):
        assert [(e.kind, e.data) async for e in a] == [(EventKind.STREAM, {"n": 1}), (EventKind.END, {})]
    assert list(router.sessions) == ["b"]
    router.feed(frame("b", "bogus", {}))
    with anyio.fail_after(1):
        events = [e async for e in b]
    assert events[0].data == {"n": 2}
    assert events[-1].kind is EventKind.ERROR and events[-1].data["error_type"] == "unknown_stream_message_type"
    assert router.sessions == {}


async def test_frames_joined_on_one_line_are_split() -> None:
    # The SDK writes a frame and its newline separately from many threads: "{A}{B}\n\n\n\n" happens.
    wire = Wire()
    router = wire.router()
    a = await router.open_session("a", b"request-a")
    b = await router.open_session("b", b"request-b")
    router.feed(frame("a", "stream", {"n": 1}))
    router.feed(frame("a", "end", {}) + frame("b", "stream", {"text": "}{ in a string"}))
    router.feed(frame("b", "end", {}) + b" " + b'{"event":"heartbeat","session_id":null,"data":{}}')
    with anyio.fail_after(1):
        assert [(e.kind, e.data) async for e in a] == [(EventKind.STREAM, {"n": 1}), (EventKind.END, {})]
        assert [(e.kind, e.data) async for e in b] == [
            (EventKind.STREAM, {"text": "}{ in a string"}),
            (EventKind.END, {}),
        ]
    assert wire.heartbeats == 1 and wire.notes == []
    router.feed(frame("a", "end", {}) + b"{broken")  # a line that is not only frames stays unreadable
    assert "unreadable" in wire.notes[-1][1]


async def test_heartbeats_logs_and_problems() -> None:
    wire = Wire()
    router = wire.router()
    router.feed(b'{"event":"heartbeat","session_id":null,"data":{}}')
    router.feed(b'{"event":"log","data":{"level":"ERROR","message":"oops"}}')
    router.feed(b"not json")
    router.feed(OversizeLine(500, None))
    assert wire.heartbeats == 1
    assert wire.notes[0] == (logging.ERROR, "oops")
    assert "unreadable" in wire.notes[1][1]
    assert "500-byte line" in wire.notes[2][1]


async def test_an_oversize_line_fails_only_its_session() -> None:
    router = Wire().router()
    big = await router.open_session("big", b"r1")
    small = await router.open_session("small", b"r2")
    router.feed(OversizeLine(1000, "big"))
    with anyio.fail_after(1):
        events = [e async for e in big]
    assert events[0].data["error_type"] == "PluginFrameTooLarge"
    assert events[0].data["args"] == {"size": 1000, "limit": 100}
    assert list(router.sessions) == ["small"]
    router.fail_all("ConnectionClosedError", "Connection closed unexpectedly")
    with anyio.fail_after(1):
        events = [e async for e in small]
    assert events == [events[0]] and events[0].data["error_type"] == "ConnectionClosedError"


async def test_a_failed_write_leaves_no_session_behind() -> None:
    async def broken(line: bytes) -> None:
        raise BrokenPipeError

    router = SessionRouter("t/p", broken, max_line=10, logger=logging.getLogger("x"))
    with pytest.raises(BrokenPipeError):
        await router.open_session("s", b"r")
    assert router.sessions == {}
