"""The ``line/1`` codec: plugins in any language, one JSON object per line (docs/line-protocol.md).

Daemon → plugin: ``invoke`` (tool invocations and credential validation), ``heartbeat`` and
``backwards_response``. Plugin → daemon: ``heartbeat_ack``, ``response``, ``stream_start`` /
``stream_chunk`` / ``stream_end``, ``backwards_invoke`` and ``log``. Each is translated to or
from the SDK protocol's frames, so the router, the dispatcher and the backwards invoker treat a
``line/1`` plugin exactly like an SDK plugin. Requests ``line/1`` cannot carry (models,
endpoints, agent strategies...) are answered by the codec itself with an error, and never
written to the plugin.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import orjson

PROTOCOL = "line/1"

#: Raw bytes per ``blob_chunk`` item, as the SDK cuts blobs.
BLOB_CHUNK = 8192
#: The error a request ``line/1`` cannot carry gets.
NOT_SUPPORTED = "NotSupportedByCodec"
#: The error a malformed message of the plugin gets (on its session).
PROTOCOL_ERROR = "LineProtocolError"

#: The error names of the line protocol's description → the names Dify's API recognises.
ERROR_NAMES = {
    "CredentialsValidationError": "CredentialsValidateFailedError",
    "RateLimitError": "InvokeRateLimitError",
    "TimeoutError": "InvokeServerUnavailableError",
}

#: ``(type, action)`` of the SDK request → ``action`` of the ``line/1`` invoke.
ACTIONS = {
    ("tool", "invoke_tool"): "invoke",
    ("tool", "validate_tool_credentials"): "validate",
}

#: SDK backwards answer event → ``line/1`` ``backwards_response`` status.
BACKWARDS_STATUS = {"response": "chunk", "end": "success", "error": "error"}

_HEARTBEAT_IN = orjson.dumps({"event": "heartbeat"})
_HEARTBEAT_OUT = orjson.dumps({"type": "heartbeat", "protocol": PROTOCOL})
_TEXT_TYPES = frozenset({"text", "link", "image"})


def _session_line(session_id: str, kind: str, data: Any) -> bytes:
    return orjson.dumps({"session_id": session_id, "event": "session", "data": {"type": kind, "data": data}})


def _error_line(session_id: str, error_type: str, message: str, args: dict[str, Any] | None = None) -> bytes:
    data = {"error_type": error_type, "message": message, "args": args or {}}
    return _session_line(session_id, "error", data)


def _log_line(level: str, message: str) -> bytes:
    return orjson.dumps({"event": "log", "data": {"level": level, "message": message}})


class ItemError(ValueError):
    """A stream item the plugin sent cannot be translated."""


def translate_item(item: Any) -> list[dict[str, Any]]:
    """One ``line/1`` item → the SDK stream items it stands for (a blob is several)."""
    if not isinstance(item, dict):
        raise ItemError(f"a stream item must be an object, got {type(item).__name__}")
    kind = item.get("type")
    if kind is None and "content" in item:
        kind = "text"
    if kind in _TEXT_TYPES:
        return [{"type": kind, "message": {"text": str(item.get("content", ""))}, "meta": None}]
    if kind == "json":
        return [{"type": "json", "message": {"json_object": item.get("content")}, "meta": None}]
    if kind == "variable":
        message = {
            "variable_name": item.get("name"),
            "variable_value": item.get("value"),
            "stream": bool(item.get("stream", False)),
        }
        return [{"type": "variable", "message": message, "meta": None}]
    if kind == "blob":
        return _blob_chunks(item)
    return [item]  # {"result": true} of a validation, or an item already in the SDK's shape


def _blob_chunks(item: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        blob = base64.b64decode(item.get("content") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ItemError("a blob item's content must be base64") from None
    meta = {"mime_type": str(item.get("mime_type") or "application/octet-stream")}
    blob_id = uuid.uuid4().hex
    total = len(blob)
    chunks = []
    for sequence, start in enumerate(range(0, total, BLOB_CHUNK)):
        piece = base64.b64encode(blob[start : start + BLOB_CHUNK]).decode("ascii")
        message = {"id": blob_id, "sequence": sequence, "total_length": total, "blob": piece, "end": False}
        chunks.append({"type": "blob_chunk", "message": message, "meta": meta})
    end = {"id": blob_id, "sequence": len(chunks), "total_length": total, "blob": "", "end": True}
    chunks.append({"type": "blob_chunk", "message": end, "meta": meta})
    return chunks


def _context(envelope: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": data.get("user_id"),
        "app_id": envelope.get("app_id"),
        "conversation_id": envelope.get("conversation_id"),
        "message_id": envelope.get("message_id"),
        "endpoint_id": envelope.get("endpoint_id"),
    }


class Line1Codec:
    """One ``line/1`` connection (stateless: every message names its session)."""

    __slots__ = ()

    def heartbeat(self) -> bytes | None:
        return _HEARTBEAT_OUT

    # --- daemon → plugin -------------------------------------------------------------------

    def encode(self, line: bytes) -> tuple[bytes | None, list[bytes]]:
        envelope = orjson.loads(line)
        event = envelope.get("event")
        if event == "request":
            return self._encode_request(envelope)
        if event == "backwards_response":
            return self._encode_backwards_response(envelope), []
        return None, []

    def _encode_request(self, envelope: dict[str, Any]) -> tuple[bytes | None, list[bytes]]:
        session_id = str(envelope.get("session_id"))
        data = envelope.get("data") or {}
        plugin_type, sdk_action = str(data.get("type")), str(data.get("action"))
        action = ACTIONS.get((plugin_type, sdk_action))
        if action is None:
            message = (
                f"the {PROTOCOL} protocol carries tool invocations and credential validation, "
                f"not {plugin_type}/{sdk_action}"
            )
            return None, [_error_line(session_id, NOT_SUPPORTED, message), _session_line(session_id, "end", {})]
        body: dict[str, Any] = {"provider": data.get("provider"), "credentials": data.get("credentials") or {}}
        if action == "invoke":
            body["tool_name"] = data.get("tool")
            body["parameters"] = data.get("tool_parameters") or {}
            body["credential_type"] = data.get("credential_type")
        body["context"] = _context(envelope, data)
        invoke = {
            "type": "invoke",
            "session_id": session_id,
            "request_id": uuid.uuid4().hex,
            "plugin_type": plugin_type,
            "action": action,
            "data": body,
        }
        return orjson.dumps(invoke), []

    def _encode_backwards_response(self, envelope: dict[str, Any]) -> bytes:
        data = envelope.get("data") or {}
        status = BACKWARDS_STATUS.get(str(data.get("event")), "error")
        message: dict[str, Any] = {
            "type": "backwards_response",
            "session_id": envelope.get("session_id"),
            "call_id": data.get("backwards_request_id"),
            "status": status,
            "data": data.get("data") if status == "chunk" else None,
        }
        if status == "error":
            message["error"] = {"type": "BackwardsInvocationError", "message": str(data.get("message") or "")}
        return orjson.dumps(message)

    # --- plugin → daemon -------------------------------------------------------------------

    def decode(self, line: bytes) -> list[bytes]:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return [line]
        if type(message) is not dict:
            return [line]
        kind = message.get("type")
        if kind == "heartbeat_ack":
            return [_HEARTBEAT_IN]
        if kind == "log":
            return [_log_line(str(message.get("level") or "INFO").upper(), str(message.get("message", "")))]
        session_id = message.get("session_id")
        if kind not in _SESSION_TYPES:
            return [_log_line("WARNING", f"{PROTOCOL}: dropped a message of unknown type {kind!r}")]
        if type(session_id) is not str:
            return [_log_line("WARNING", f"{PROTOCOL}: dropped a {kind} message without a session_id")]
        try:
            return _SESSION_TYPES[kind](session_id, message)
        except ItemError as exc:
            return [_error_line(session_id, PROTOCOL_ERROR, str(exc))]


def _response(session_id: str, message: dict[str, Any]) -> list[bytes]:
    if message.get("status") == "error":
        error = message.get("error")
        if not isinstance(error, dict):
            error = {}
        name = str(error.get("type") or "PluginError")
        args = {"code": error["code"]} if error.get("code") is not None else {}
        return [
            _error_line(session_id, ERROR_NAMES.get(name, name), str(error.get("message") or ""), args),
            _session_line(session_id, "end", {}),
        ]
    data = message.get("data")
    items = data if isinstance(data, list) else [] if data is None else [data]
    lines = [_session_line(session_id, "stream", sdk) for item in items for sdk in translate_item(item)]
    lines.append(_session_line(session_id, "end", {}))
    return lines


def _stream_start(session_id: str, message: dict[str, Any]) -> list[bytes]:
    return []


def _stream_chunk(session_id: str, message: dict[str, Any]) -> list[bytes]:
    return [_session_line(session_id, "stream", sdk) for sdk in translate_item(message.get("data"))]


def _stream_end(session_id: str, message: dict[str, Any]) -> list[bytes]:
    return [_session_line(session_id, "end", {})]


def _backwards_invoke(session_id: str, message: dict[str, Any]) -> list[bytes]:
    invoke = {
        "type": message.get("target"),
        "backwards_request_id": message.get("call_id"),
        "request": message.get("request"),
    }
    return [_session_line(session_id, "invoke", invoke)]


_SESSION_TYPES = {
    "response": _response,
    "stream_start": _stream_start,
    "stream_chunk": _stream_chunk,
    "stream_end": _stream_end,
    "backwards_invoke": _backwards_invoke,
}
