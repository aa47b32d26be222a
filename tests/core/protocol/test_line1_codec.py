"""The line/1 codec, message by message: every message of docs/line-protocol.md is translated to or
from the SDK protocol, and the translated lines go through the real SessionRouter to the session
events the core sees (round trip: SDK request → line/1 → plugin answer → session events)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson
import pytest
from plugin_daemon.protocol.codecs import CODECS, CodecLink, codec_for, register_codec, runner_protocol
from plugin_daemon.protocol.codecs.line1 import BLOB_CHUNK, NOT_SUPPORTED, PROTOCOL, Line1Codec
from plugin_daemon.protocol.messages import encode_backwards_response, encode_request
from plugin_daemon.protocol.router import SessionRouter
from plugin_daemon.runtime import EventKind, SessionEvent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Wire:
    """A router behind a line/1 link; ``sent`` holds what the plugin would read."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.beats = 0
        self.notes: list[tuple[int, str]] = []
        self.link = CodecLink(Line1Codec(), self._write)
        self.router = SessionRouter(
            "tester/line",
            self.link.write,
            max_line=1 << 20,
            logger=logging.getLogger("test.line1"),
            on_heartbeat=self._beat,
            on_note=lambda level, message: self.notes.append((level, message)),
        )
        self.link.router = self.router

    async def _write(self, line: bytes) -> None:
        self.sent.append(orjson.loads(line))

    def _beat(self) -> None:
        self.beats += 1

    def plugin_says(self, **message: Any) -> None:
        self.link.feed(orjson.dumps(message))

    async def open(self, session_id: str, data: dict[str, Any], **envelope: Any) -> Any:
        return await self.router.open_session(session_id, encode_request(session_id, data, **envelope))


def drain(channel: Any) -> list[SessionEvent]:
    events = []
    while channel.has_pending():
        event, _ = channel._queue.popleft()
        events.append(event)
    return events


INVOKE = {
    "user_id": "u1",
    "type": "tool",
    "action": "invoke_tool",
    "provider": "echo_tool",
    "tool": "echo",
    "tool_parameters": {"text": "hi"},
    "credentials": {"api_key": "k"},
    "credential_type": "api-key",
}


async def test_invoke_tool_becomes_a_line1_invoke() -> None:
    wire = Wire()
    await wire.open("s1", INVOKE, app_id="a1", conversation_id="c1", message_id="m1", endpoint_id=None)
    [sent] = wire.sent
    assert sent["type"] == "invoke" and sent["session_id"] == "s1" and sent["request_id"]
    assert (sent["plugin_type"], sent["action"]) == ("tool", "invoke")
    assert sent["data"] == {
        "provider": "echo_tool",
        "tool_name": "echo",
        "parameters": {"text": "hi"},
        "credentials": {"api_key": "k"},
        "credential_type": "api-key",
        "context": {"user_id": "u1", "app_id": "a1", "conversation_id": "c1", "message_id": "m1", "endpoint_id": None},
    }


async def test_validate_credentials_becomes_validate_and_result_passes_through() -> None:
    wire = Wire()
    data = {"user_id": "u", "type": "tool", "action": "validate_tool_credentials", "provider": "p", "credentials": {}}
    channel = await wire.open("s2", data)
    assert wire.sent[0]["action"] == "validate" and wire.sent[0]["data"]["provider"] == "p"
    wire.plugin_says(type="response", session_id="s2", request_id="r", status="success", data={"result": True})
    assert drain(channel) == [SessionEvent(EventKind.STREAM, {"result": True}), SessionEvent(EventKind.END, {})]


async def test_requests_line1_cannot_carry_are_refused_without_writing() -> None:
    wire = Wire()
    channel = await wire.open("s3", {"user_id": "u", "type": "model", "action": "invoke_llm"})
    assert wire.sent == []
    [error] = drain(channel)
    assert error.kind is EventKind.ERROR and error.data["error_type"] == NOT_SUPPORTED
    assert "model/invoke_llm" in error.data["message"]


async def test_response_items_become_stream_items_then_end() -> None:
    wire = Wire()
    channel = await wire.open("s4", INVOKE)
    items = [
        {"type": "text", "content": "a"},
        {"content": "b"},
        {"type": "link", "content": "https://example.invalid/x"},
        {"type": "image", "content": "https://example.invalid/i.png"},
        {"type": "json", "content": {"k": 1}},
        {"type": "variable", "name": "v", "value": 42},
        {"type": "variable", "name": "s", "value": "c", "stream": True},
    ]
    wire.plugin_says(type="response", session_id="s4", request_id="r", status="success", data=items)
    events = drain(channel)
    assert [event.data for event in events[:-1]] == [
        {"type": "text", "message": {"text": "a"}, "meta": None},
        {"type": "text", "message": {"text": "b"}, "meta": None},
        {"type": "link", "message": {"text": "https://example.invalid/x"}, "meta": None},
        {"type": "image", "message": {"text": "https://example.invalid/i.png"}, "meta": None},
        {"type": "json", "message": {"json_object": {"k": 1}}, "meta": None},
        {"type": "variable", "message": {"variable_name": "v", "variable_value": 42, "stream": False}, "meta": None},
        {"type": "variable", "message": {"variable_name": "s", "variable_value": "c", "stream": True}, "meta": None},
    ]
    assert events[-1] == SessionEvent(EventKind.END, {})


async def test_blob_is_cut_as_the_sdk_cuts_it() -> None:
    wire = Wire()
    channel = await wire.open("s5", INVOKE)
    blob = bytes(range(256)) * 80  # 20480 bytes: 3 chunks of at most 8192, then the end chunk
    content = base64.b64encode(blob).decode()
    wire.plugin_says(
        type="response",
        session_id="s5",
        status="success",
        data={"type": "blob", "content": content, "mime_type": "image/png"},
    )
    events = drain(channel)
    chunks = [event.data for event in events[:-1]]
    assert [chunk["message"]["sequence"] for chunk in chunks] == [0, 1, 2, 3]
    assert all(chunk["type"] == "blob_chunk" and chunk["meta"] == {"mime_type": "image/png"} for chunk in chunks)
    assert len({chunk["message"]["id"] for chunk in chunks}) == 1
    assert all(chunk["message"]["total_length"] == len(blob) for chunk in chunks)
    assert b"".join(base64.b64decode(chunk["message"]["blob"]) for chunk in chunks) == blob
    assert max(len(base64.b64decode(chunk["message"]["blob"])) for chunk in chunks) == BLOB_CHUNK
    assert chunks[-1]["message"]["end"] is True and chunks[-1]["message"]["blob"] == ""
    assert events[-1].kind is EventKind.END


async def test_bad_blob_fails_only_its_session() -> None:
    wire = Wire()
    channel = await wire.open("s6", INVOKE)
    wire.plugin_says(type="response", session_id="s6", status="success", data={"type": "blob", "content": "%%%"})
    [error] = drain(channel)
    assert error.kind is EventKind.ERROR and "base64" in error.data["message"]


async def test_stream_start_chunk_end() -> None:
    wire = Wire()
    channel = await wire.open("s7", INVOKE)
    wire.plugin_says(type="stream_start", session_id="s7", request_id="r")
    assert not channel.has_pending()
    wire.plugin_says(type="stream_chunk", session_id="s7", data={"content": "1 "})
    wire.plugin_says(type="stream_chunk", session_id="s7", data={"type": "json", "content": [1]})
    wire.plugin_says(type="stream_end", session_id="s7", data={"total_tokens": 3})
    assert drain(channel) == [
        SessionEvent(EventKind.STREAM, {"type": "text", "message": {"text": "1 "}, "meta": None}),
        SessionEvent(EventKind.STREAM, {"type": "json", "message": {"json_object": [1]}, "meta": None}),
        SessionEvent(EventKind.END, {}),
    ]


@pytest.mark.parametrize(
    ("name", "dify_name"),
    [
        ("CredentialsValidationError", "CredentialsValidateFailedError"),
        ("RateLimitError", "InvokeRateLimitError"),
        ("TimeoutError", "InvokeServerUnavailableError"),
        ("PluginError", "PluginError"),
        ("ValueError", "ValueError"),
    ],
)
async def test_error_names_are_mapped_to_difys(name: str, dify_name: str) -> None:
    wire = Wire()
    channel = await wire.open("s8", INVOKE)
    wire.plugin_says(
        type="response", session_id="s8", status="error", error={"type": name, "message": "no", "code": "E1"}
    )
    assert drain(channel) == [
        SessionEvent(EventKind.ERROR, {"error_type": dify_name, "message": "no", "args": {"code": "E1"}})
    ]


async def test_backwards_invoke_and_its_answers() -> None:
    wire = Wire()
    channel = await wire.open("s9", INVOKE)
    wire.plugin_says(
        type="backwards_invoke", session_id="s9", call_id="c1", target="storage", request={"opt": "get", "key": "k"}
    )
    [invoke] = drain(channel)
    assert invoke == SessionEvent(
        EventKind.INVOKE, {"type": "storage", "backwards_request_id": "c1", "request": {"opt": "get", "key": "k"}}
    )
    # the core's answers (as the backwards invoker writes them) reach the plugin as backwards_response
    await channel.send(encode_backwards_response("s9", "c1", "response", "struct", {"data": "6869"}))
    await channel.send(encode_backwards_response("s9", "c1", "error", "quota exceeded", None))
    await channel.send(encode_backwards_response("s9", "c1", "end", "", None))
    assert wire.sent[1:] == [
        {
            "type": "backwards_response",
            "session_id": "s9",
            "call_id": "c1",
            "status": "chunk",
            "data": {"data": "6869"},
        },
        {
            "type": "backwards_response",
            "session_id": "s9",
            "call_id": "c1",
            "status": "error",
            "data": None,
            "error": {"type": "BackwardsInvocationError", "message": "quota exceeded"},
        },
        {"type": "backwards_response", "session_id": "s9", "call_id": "c1", "status": "success", "data": None},
    ]


async def test_heartbeat_ack_log_and_heartbeat() -> None:
    wire = Wire()
    assert orjson.loads(Line1Codec().heartbeat() or b"") == {"type": "heartbeat", "protocol": PROTOCOL}
    wire.plugin_says(type="heartbeat_ack")
    assert wire.beats == 1
    wire.plugin_says(type="log", level="warn", message="careful", timestamp="2026-01-01T00:00:00Z")
    assert (logging.WARNING, "careful") in wire.notes


async def test_unknown_and_sessionless_messages_are_logged_and_dropped() -> None:
    wire = Wire()
    channel = await wire.open("s10", INVOKE)
    wire.plugin_says(type="telepathy", session_id="s10")
    wire.plugin_says(type="stream_chunk", data={"content": "lost"})
    assert not channel.has_pending()
    assert [level for level, _ in wire.notes] == [logging.WARNING, logging.WARNING]
    assert "telepathy" in wire.notes[0][1] and "without a session_id" in wire.notes[1][1]


async def test_a_line_that_is_not_json_is_stray_output() -> None:
    wire = Wire()
    wire.link.feed(b"console.log leaked this")
    assert any("console.log leaked this" in message for _, message in wire.notes)


def test_codecs_are_found_by_the_manifests_protocol() -> None:
    assert codec_for(PROTOCOL) is CODECS[PROTOCOL]
    with pytest.raises(KeyError, match="line/1"):
        codec_for("line/9")
    assert runner_protocol({"meta": {"runner": {"protocol": "line/1"}}}) == "line/1"
    assert runner_protocol({"meta": {"runner": {"language": "python"}}}) is None


def test_an_extension_registers_a_codec_through_the_hook() -> None:
    import types

    from plugin_daemon.hookspecs import hookimpl
    from plugin_daemon.plugins import ExtensionManager

    module = types.ModuleType("shout_codec")

    @hookimpl
    def plugin_daemon_register_codecs(register):  # type: ignore[no-untyped-def]
        register("shout/1", Line1Codec)

    module.plugin_daemon_register_codecs = plugin_daemon_register_codecs  # type: ignore[attr-defined]
    manager = ExtensionManager()
    manager.register(module, "shout_codec")
    try:
        manager.register_codecs()
        assert codec_for("shout/1") is Line1Codec
        assert manager.registrations("shout_codec")["codecs"] == ["shout/1"]
        with pytest.raises(ValueError, match="two codecs"):
            register_codec("shout/1", lambda: Line1Codec())
    finally:
        CODECS.pop("shout/1", None)
