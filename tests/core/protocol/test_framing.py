from __future__ import annotations

import time

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from plugin_daemon.protocol.framing import LineReader, LineTooLong, OversizeLine, find_session_id

pytestmark = pytest.mark.anyio


class ChunkStream(ByteReceiveStream):
    """Hands out the given chunks, one per receive, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.calls = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self.calls += 1
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.chunks = []


async def collect(chunks: list[bytes], max_size: int = 1024) -> list[bytes | OversizeLine]:
    with anyio.fail_after(5):
        return [item async for item in LineReader(ChunkStream(chunks), max_size)]


async def test_splits_lines_across_reads() -> None:
    assert await collect([b'{"a":', b"1}\n{", b'"b":2}\n']) == [b'{"a":1}', b'{"b":2}']


async def test_many_lines_in_one_read() -> None:
    assert await collect([b"a\nb\nc\n"]) == [b"a", b"b", b"c"]


async def test_skips_blank_lines_written_separately() -> None:
    # The SDK writes the JSON and "\n\n" as two writes.
    chunks = [b'{"event":"heartbeat"}', b"\n\n", b'{"x":1}', b"\n\n", b"\n"]
    assert await collect(chunks) == [b'{"event":"heartbeat"}', b'{"x":1}']


async def test_crlf_is_stripped() -> None:
    assert await collect([b"one\r\ntwo\r", b"\n\r\n"]) == [b"one", b"two"]


async def test_last_line_without_newline_is_kept() -> None:
    assert await collect([b"one\ntw", b"o"]) == [b"one", b"two"]


async def test_oversize_line_in_one_chunk_reports_session() -> None:
    big = b'{"event":"session","session_id":"s-big","data":"' + b"x" * 2000 + b'"}'
    items = await collect([big + b"\nafter\n"], max_size=1000)
    assert items == [OversizeLine(len(big), "s-big"), b"after"]


async def test_oversize_line_across_chunks_is_discarded_and_stream_goes_on() -> None:
    head = b'{"event":"session","session_id":"s-1","data":{"type":"stream","data":"'
    chunks = [b"before\n" + head] + [b"y" * 300] * 20 + [b'"}}\n{"ok":1}\n']
    items = await collect(chunks, max_size=1000)
    size = len(head) + 300 * 20 + len(b'"}}')
    assert items == [b"before", OversizeLine(size, "s-1"), b'{"ok":1}']


async def test_oversize_line_without_session_id() -> None:
    items = await collect([b"z" * 5000, b"\nnext\n"], max_size=100)
    assert items == [OversizeLine(5000, None), b"next"]


async def test_oversize_at_end_of_stream() -> None:
    items = await collect([b'{"session_id":"tail"' + b"q" * 500], max_size=100)
    assert items == [OversizeLine(520, "tail")]


async def test_line_of_exactly_max_size_is_kept() -> None:
    assert await collect([b"a" * 100 + b"\n"], max_size=100) == [b"a" * 100]


def test_find_session_id_only_looks_at_the_head() -> None:
    assert find_session_id(b'{"session_id" : "abc-1"}') == "abc-1"
    assert find_session_id(b"x" * 2000 + b'"session_id":"late"') is None
    assert find_session_id(b'{"session_id":null}') is None


async def test_long_line_in_many_small_chunks_is_linear() -> None:
    # 8 MiB in 4 KiB chunks: a quadratic re-scan would take minutes; this takes well under a second.
    chunk = b"x" * 4096
    chunks = [b'{"session_id":"s"'] + [chunk] * 2048 + [b"\nend\n"]
    started = time.perf_counter()
    items = await collect(chunks, max_size=16 * 1024 * 1024)
    assert time.perf_counter() - started < 2.0
    assert len(items) == 2 and len(items[0]) == 17 + 8 * 1024 * 1024 and items[1] == b"end"


async def test_a_strict_reader_raises_as_soon_as_a_line_passes_the_limit() -> None:
    stream = ChunkStream([b"ok\n" + b"x" * 600, b"x" * 600, b"never read\n"])
    reader = LineReader(stream, 1000, strict=True)
    assert await reader.__anext__() == b"ok"
    with pytest.raises(LineTooLong) as too_long:
        await reader.__anext__()
    assert too_long.value.limit == 1000 and too_long.value.size > 1000
    assert stream.chunks == [b"never read\n"]  # it did not wait for the newline


async def test_strictness_can_be_lifted_once_the_peer_is_trusted() -> None:
    reader = LineReader(ChunkStream([b"a\n", b"y" * 50 + b"\n", b"b\n"]), 10, strict=True)
    assert await reader.__anext__() == b"a"
    reader.strict = False
    assert [item async for item in reader] == [OversizeLine(50, None), b"b"]
