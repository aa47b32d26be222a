"""Bounded line framing over a byte stream (the plugin's stdout, a debug TCP connection).

Plugins write one JSON object per line; the Dify SDK writes the JSON and its ``\\n\\n`` as two
separate writes, so blank lines are skipped. A line longer than ``max_size`` does not break the
stream: its bytes are discarded up to the next newline and the reader yields an
:class:`OversizeLine` that names the session, when the first bytes of the line show one, so the
caller fails that one session and goes on serving the others.

Cost: each received chunk is split once (``bytes.split``); a line spread over many chunks is
kept as a list of pieces and joined once, so a long line costs O(length), never a re-scan.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from anyio.abc import ByteReceiveStream

#: Where to look for ``"session_id":"..."`` in a line that is too long to keep.
SESSION_ID_PROBE_BYTES = 1024
#: How much a single ``receive`` asks for.
READ_CHUNK = 256 * 1024

_SESSION_ID = re.compile(rb'"session_id"\s*:\s*"([^"\\]{1,256})"')


class LineTooLong(Exception):
    """Raised by a :attr:`LineReader.strict` reader as soon as a line passes the limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a line of more than {limit} bytes ({size} bytes seen)")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class OversizeLine:
    """A line over the limit was dropped. ``size`` counts the bytes seen (without the newline)."""

    size: int
    session_id: str | None


def find_session_id(head: bytes) -> str | None:
    """The ``session_id`` in the first bytes of a frame, if it is there."""
    match = _SESSION_ID.search(head, 0, SESSION_ID_PROBE_BYTES)
    return match.group(1).decode("utf-8", "replace") if match else None


class LineReader:
    """Async iterator of lines (``bytes`` without ``\\n`` or a trailing ``\\r``) or :class:`OversizeLine`.

    Ends when the stream ends (a last unterminated line is still yielded). Errors of the
    underlying stream other than end-of-stream propagate. While :attr:`strict` is true, a line
    over the limit raises :class:`LineTooLong` as soon as the limit is passed instead (for a peer
    that has not proved who it is yet); the reader is not usable after that.
    """

    __slots__ = ("_stream", "max_size", "strict", "_ready", "_parts", "_part_len", "_discarding", "_head", "_eof")

    def __init__(self, stream: ByteReceiveStream, max_size: int, *, strict: bool = False) -> None:
        self._stream = stream
        self.max_size = max_size
        self.strict = strict
        self._ready: deque[bytes | OversizeLine] = deque()
        self._parts: list[bytes] = []  # pieces of the line being received
        self._part_len = 0
        self._discarding = False  # inside an oversize line: drop until the next newline
        self._head = b""  # first bytes of the oversize line (to find its session id)
        self._eof = False

    def __aiter__(self) -> AsyncIterator[bytes | OversizeLine]:
        return self

    async def __anext__(self) -> bytes | OversizeLine:
        ready = self._ready
        while not ready:
            if self._eof:
                raise StopAsyncIteration
            try:
                chunk = await self._stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._eof = True
                self._finish()
            else:
                self.feed(chunk)
        return ready.popleft()

    def feed(self, chunk: bytes) -> None:
        """Split one chunk; complete items are queued for ``__anext__`` (public for tests)."""
        pieces = chunk.split(b"\n")
        last = pieces.pop()  # the unterminated rest (b"" when the chunk ends with a newline)
        for piece in pieces:
            if self._parts or self._discarding:
                self._extend(piece)
                self._end_line()
            else:
                self._complete(piece)
        if last:
            self._extend(last)

    def _extend(self, piece: bytes) -> None:
        if self._discarding:
            self._part_len += len(piece)
            return
        self._parts.append(piece)
        self._part_len += len(piece)
        if self._part_len > self.max_size:
            if self.strict:
                raise LineTooLong(self._part_len, self.max_size)
            # Keep only what finds the session id, drop the rest as it comes.
            self._head = b"".join(self._parts)[:SESSION_ID_PROBE_BYTES]
            self._parts = []
            self._discarding = True

    def _end_line(self) -> None:
        if self._discarding:
            self._ready.append(OversizeLine(self._part_len, find_session_id(self._head)))
            self._discarding = False
            self._head = b""
        else:
            self._complete(b"".join(self._parts))
        self._parts = []
        self._part_len = 0

    def _complete(self, line: bytes) -> None:
        if len(line) > self.max_size:
            if self.strict:
                raise LineTooLong(len(line), self.max_size)
            self._ready.append(OversizeLine(len(line), find_session_id(line[:SESSION_ID_PROBE_BYTES])))
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            self._ready.append(line)

    def _finish(self) -> None:
        if self._parts or self._discarding:
            self._end_line()
