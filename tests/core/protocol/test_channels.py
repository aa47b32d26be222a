"""QueueSessionChannel on its own: ordering, terminal events, close, overflow policy."""

from __future__ import annotations

import anyio
import pytest
from plugin_daemon.protocol import channels
from plugin_daemon.protocol.channels import QueueSessionChannel
from plugin_daemon.runtime import EventKind, SessionEvent

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.detached: list[str] = []

    async def write(self, line: bytes) -> None:
        self.written.append(line)

    def detach(self, session_id: str) -> None:
        self.detached.append(session_id)


def stream(n: int) -> SessionEvent:
    return SessionEvent(EventKind.STREAM, {"n": n})


async def test_events_in_order_until_end() -> None:
    recorder = Recorder()
    channel = QueueSessionChannel("s", recorder.write, recorder.detach)
    assert channel.deliver(stream(1), 10) is False
    assert channel.deliver(stream(2), 10) is False
    assert channel.deliver(SessionEvent(EventKind.END, {}), 10) is True
    assert channel.deliver(stream(3), 10) is True  # after the end: dropped
    with anyio.fail_after(1):
        events = [event async for event in channel]
    assert [e.data for e in events] == [{"n": 1}, {"n": 2}, {}]
    await channel.send(b'{"x":1}')
    assert recorder.written == [b'{"x":1}']


async def test_consumer_waits_for_the_producer() -> None:
    channel = QueueSessionChannel("s", Recorder().write, Recorder().detach)
    received: list[SessionEvent] = []

    async def consume() -> None:
        async for event in channel:
            received.append(event)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            channel.deliver(stream(1), 1)
            await anyio.wait_all_tasks_blocked()
            assert len(received) == 1
            channel.fail("Boom", "gone")
    assert [e.kind for e in received] == [EventKind.STREAM, EventKind.ERROR]
    assert received[-1].data == {"error_type": "Boom", "message": "gone", "args": {}}


async def test_error_ends_the_iteration() -> None:
    channel = QueueSessionChannel("s", Recorder().write, Recorder().detach)
    channel.deliver(SessionEvent(EventKind.ERROR, {"error_type": "ValueError"}), 5)
    channel.deliver(SessionEvent(EventKind.END, {}), 5)
    with anyio.fail_after(1):
        assert [e.kind async for e in channel] == [EventKind.ERROR]


async def test_aclose_detaches_and_ends_a_waiting_consumer() -> None:
    recorder = Recorder()
    channel = QueueSessionChannel("s", recorder.write, recorder.detach)
    received: list[SessionEvent] = []

    async def consume() -> None:
        async for event in channel:
            received.append(event)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            await channel.aclose()
    assert received == [] and recorder.detached == ["s"]


async def test_a_slow_consumer_fails_its_session_not_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "MAX_BUFFERED_BYTES", 1000)
    channel = QueueSessionChannel("s", Recorder().write, Recorder().detach)
    overflowed = False
    for n in range(200):  # the producer never blocks
        overflowed = channel.deliver(stream(n), 100)
        if overflowed:
            break
    assert overflowed and n == 10
    with anyio.fail_after(1):
        events = [event async for event in channel]
    assert [e.kind for e in events] == [EventKind.ERROR]
    assert events[0].data["error_type"] == "PluginSessionOverflow"
