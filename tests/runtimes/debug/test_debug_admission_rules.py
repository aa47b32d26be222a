"""The admission rules of the debug listener on their own: strangers, the bytes budget, the first line."""

from __future__ import annotations

import anyio
import pytest
from plugin_daemon.protocol.framing import LineTooLong
from plugin_daemon_debug.admission import BUSY, GIVE_BACK_AFTER, Admission, read_first_line
from plugin_daemon_debug.handshake import Refused


class Trickle:
    """A byte stream of ``data`` that honours ``max_bytes`` and records what was asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int] = []

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self.asked.append(max_bytes)
        if not self.data:
            raise anyio.EndOfStream
        chunk, self.data = self.data[:max_bytes], self.data[max_bytes:]
        return chunk


@pytest.mark.anyio  # cancel scopes belong to an event loop
async def test_an_address_keeps_a_few_strangers_and_one_more_closes_its_oldest() -> None:
    admission = Admission(per_address=2, max_registering_bytes=100)
    first, second = admission.arrive("a", full=False), admission.arrive("a", full=False)
    other = admission.arrive("b", full=False)
    assert first and second and other
    third = admission.arrive("a", full=False)
    assert third is not None
    assert first.evicted is not None and "from a" in first.evicted and first.scope.cancel_called
    assert second.evicted is None and other.evicted is None
    assert admission.strangers == 3


@pytest.mark.anyio
async def test_a_full_listener_closes_the_longest_waiting_stranger_else_is_busy() -> None:
    admission = Admission(per_address=4, max_registering_bytes=100)
    oldest, newer = admission.arrive("a", full=False), admission.arrive("b", full=False)
    assert oldest and newer
    assert admission.arrive("c", full=True) is not None
    assert oldest.evicted is not None and newer.evicted is None
    admission.leave(newer)  # it sent its key
    admission.leave(newer)  # leaving twice is harmless
    stranger = admission.arrive("d", full=True)  # closes "c", the only stranger left
    assert stranger is not None
    admission.leave(stranger)
    assert admission.strangers == 0
    assert admission.arrive("e", full=True) is None  # everybody has proved its key: busy


def test_registrations_share_a_budget_of_bytes() -> None:
    admission = Admission(per_address=4, max_registering_bytes=100)
    admission.charge(60)
    with pytest.raises(Refused) as refused:
        admission.charge(41)
    assert refused.value.line.startswith(BUSY)
    admission.release(60)
    admission.charge(100)
    assert admission.registering_bytes == 100


def test_memory_is_given_back_after_enough_was_let_go() -> None:
    admission = Admission(per_address=4, max_registering_bytes=100)
    assert not admission.let_go(GIVE_BACK_AFTER - 1)
    assert admission.let_go(1)
    assert not admission.let_go(GIVE_BACK_AFTER - 1)


@pytest.mark.anyio
async def test_the_first_line_is_read_in_bounded_pieces() -> None:
    stream = Trickle(b"\n\r\n" + b'{"type":"handshake"}\n' + b"rest of the registration" * 100)
    first = await read_first_line(stream, 64)  # type: ignore[arg-type]
    assert first.startswith(b'{"type":"handshake"}\n')
    assert max(stream.asked) <= 65
    with pytest.raises(LineTooLong):
        await read_first_line(Trickle(b"x" * 1000), 64)  # type: ignore[arg-type]
    with pytest.raises(anyio.EndOfStream):
        await read_first_line(Trickle(b"no newline"), 64)  # type: ignore[arg-type]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
