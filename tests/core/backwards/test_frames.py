from __future__ import annotations

import pytest
from plugin_daemon.backwards.frames import FrameDecoder, FrameError, encode_frame


def test_frames_split_anywhere_are_reassembled() -> None:
    data = encode_frame(b'{"data":1,"error":""}') + encode_frame(b"") + encode_frame(b"x" * 70000)
    decoder = FrameDecoder()
    payloads = [payload for index in range(len(data)) for payload in decoder.feed(data[index : index + 1])]
    decoder.close()
    assert payloads == [b'{"data":1,"error":""}', b"", b"x" * 70000]


def test_a_bad_magic_byte_is_refused_clearly() -> None:
    bad = b"\x0e" + encode_frame(b"{}")[1:]
    with pytest.raises(FrameError, match="magic byte is 0x0e"):
        list(FrameDecoder().feed(bad))


def test_a_bad_header_length_is_refused() -> None:
    frame = bytearray(encode_frame(b"{}"))
    frame[2] = 11
    with pytest.raises(FrameError, match="header length is 11"):
        list(FrameDecoder().feed(bytes(frame)))


def test_an_oversize_or_truncated_frame_is_refused() -> None:
    with pytest.raises(FrameError, match="over the limit"):
        list(FrameDecoder(max_payload=10).feed(encode_frame(b"x" * 11)))
    decoder = FrameDecoder()
    assert list(decoder.feed(encode_frame(b"abcdef")[:-2])) == []
    with pytest.raises(FrameError, match="inside a frame"):
        decoder.close()
