from __future__ import annotations

import orjson
from plugin_daemon.protocol.messages import (
    HEARTBEAT,
    LogFrame,
    ManifestEcho,
    ProcessError,
    SessionFrame,
    UnknownEvent,
    Unreadable,
    encode_backwards_response,
    encode_request,
    error_payload,
    parse_output_line,
)
from plugin_daemon.runtime import EventKind


def test_encode_request_shape() -> None:
    line = encode_request("s-1", {"user_id": "u", "type": "tool", "action": "invoke_tool"}, app_id="a")
    assert not line.endswith(b"\n")
    assert orjson.loads(line) == {
        "session_id": "s-1",
        "conversation_id": None,
        "message_id": None,
        "app_id": "a",
        "endpoint_id": None,
        "context": None,
        "event": "request",
        "data": {"user_id": "u", "type": "tool", "action": "invoke_tool"},
    }


def test_encode_request_embeds_pre_encoded_json() -> None:
    line = encode_request("s", b'{"type":"tool"}', context=b'{"k":[1]}')
    obj = orjson.loads(line)
    assert obj["data"] == {"type": "tool"} and obj["context"] == {"k": [1]}


def test_encode_backwards_response_shape() -> None:
    line = encode_backwards_response("s", "b1", "response", "stream", {"data": "ok"})
    assert orjson.loads(line) == {
        "session_id": "s",
        "conversation_id": None,
        "message_id": None,
        "app_id": None,
        "endpoint_id": None,
        "context": None,
        "event": "backwards_response",
        "data": {
            "backwards_request_id": "b1",
            "event": "response",
            "message": "stream",
            "data": {"data": "ok"},
        },
    }
    end = orjson.loads(encode_backwards_response("s", "b1", "end", "", None))
    assert end["data"] == {"backwards_request_id": "b1", "event": "end", "message": "", "data": None}


def test_parse_sdk_frames() -> None:
    assert parse_output_line(b'{"event":"heartbeat","session_id":null,"data":{}}') is HEARTBEAT
    log = b'{"event": "log", "data": {"level": "WARNING", "message": "hi", "timestamp": 1.5}}'
    assert parse_output_line(log) == LogFrame("WARNING", "hi")
    stream = b'{"event":"session","session_id":"s","data":{"type":"stream","data":{"type":"text"}}}'
    assert parse_output_line(stream) == SessionFrame("s", EventKind.STREAM, "stream", {"type": "text"})
    end = b'{"event":"session","session_id":"s","data":{"type":"end","data":{}}}'
    assert parse_output_line(end) == SessionFrame("s", EventKind.END, "end", {})
    error = b'{"event":"error","session_id":null,"data":{"error":"bad"}}'
    assert parse_output_line(error) == ProcessError(None, {"error": "bad"})


def test_parse_odd_lines() -> None:
    assert parse_output_line(b'{"version":"0.0.1","type":"plugin"}') == ManifestEcho(
        {"version": "0.0.1", "type": "plugin"}
    )
    assert parse_output_line(b'{"event":"bogus"}') == UnknownEvent("bogus")
    weird = parse_output_line(b'{"event":"session","session_id":"s","data":{"type":"weird","data":1}}')
    assert weird == SessionFrame("s", None, "weird", 1)
    text = parse_output_line(b"Traceback (most recent call last):")
    assert isinstance(text, Unreadable) and text.text.startswith("Traceback")
    assert isinstance(parse_output_line(b"[1,2]"), Unreadable)


def test_error_payload() -> None:
    assert error_payload("X", "m") == {"error_type": "X", "message": "m", "args": {}}
