"""Dify's length-prefixed stream frames (answers of streaming inner-API calls).

Each frame is a 14-byte header — magic 0x0F, a reserved byte, the header length 10 as a little-endian
uint16, the payload length as a little-endian uint32, six reserved bytes — then the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAGIC = 0x0F
HEADER = struct.Struct("<BBHI6x")
HEADER_LENGTH = 10


class FrameError(Exception):
    pass


class FrameDecoder:
    """Feed it bytes as they arrive; it yields whole payloads. Bounded by ``max_payload``."""

    def __init__(self, max_payload: int = 30 * 1024 * 1024) -> None:
        self.buffer = bytearray()
        self.max_payload = max_payload

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            magic, _reserved, header_length, size = HEADER.unpack_from(self.buffer)
            if magic != MAGIC:
                raise FrameError(f"invalid stream frame: magic byte is 0x{magic:02x}, expected 0x0f")
            if header_length != HEADER_LENGTH:
                raise FrameError(f"invalid stream frame: header length is {header_length}, expected 10")
            if size > self.max_payload:
                raise FrameError(f"stream frame of {size} bytes is over the limit of {self.max_payload}")
            end = HEADER.size + size
            if len(self.buffer) < end:
                return
            payload = bytes(self.buffer[HEADER.size : end])
            del self.buffer[:end]
            yield payload

    def close(self) -> None:
        if self.buffer:
            raise FrameError(f"stream ended inside a frame ({len(self.buffer)} bytes left over)")


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, 0, HEADER_LENGTH, len(payload)) + payload
