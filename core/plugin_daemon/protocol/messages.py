"""The Dify plugin protocol's line messages (``reference/protocol.md`` §1.2-§1.4).

Encoding builds the daemon → plugin lines; :func:`parse_output_line` turns one plugin output
line into a small typed frame with just what routing needs. This is the hot path: one
``orjson.loads`` per line, no schema validation (payloads are checked at install time, and the
core forwards them as they are).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from plugin_daemon.runtime import EventKind

#: How much of an unreadable line is kept for the log.
UNREADABLE_KEEP = 2048

_KINDS: dict[Any, EventKind] = {kind.value: kind for kind in EventKind}


def _json(value: Any) -> Any:
    """Pre-encoded JSON (``bytes``) is embedded as is; anything else is encoded by orjson."""
    if isinstance(value, bytes | bytearray | memoryview):
        return orjson.Fragment(bytes(value))
    return value


def encode_request(
    session_id: str,
    data: Mapping[str, Any] | bytes,
    *,
    conversation_id: str | None = None,
    message_id: str | None = None,
    app_id: str | None = None,
    endpoint_id: str | None = None,
    context: Mapping[str, Any] | bytes | None = None,
) -> bytes:
    """The request line of §1.3, without its trailing newline.

    ``data`` is ``{user_id, type, action, ...request fields}``; it (and ``context``) may be given
    already encoded as JSON bytes, which are embedded without re-encoding.
    """
    return orjson.dumps(
        {
            "session_id": session_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "app_id": app_id,
            "endpoint_id": endpoint_id,
            "context": _json(context),
            "event": "request",
            "data": _json(data),
        }
    )


def encode_backwards_response(session_id: str, backwards_request_id: str, event: str, message: str, data: Any) -> bytes:
    """A ``backwards_response`` line of §1.4 (``event``: response | error | end), no trailing newline."""
    return orjson.dumps(
        {
            "session_id": session_id,
            "conversation_id": None,
            "message_id": None,
            "app_id": None,
            "endpoint_id": None,
            "context": None,
            "event": "backwards_response",
            "data": {
                "backwards_request_id": backwards_request_id,
                "event": event,
                "message": message,
                "data": _json(data),
            },
        }
    )


def error_payload(error_type: str, message: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` of a session ``error`` message, as the SDK shapes it."""
    return {"error_type": error_type, "message": message, "args": dict(args) if args else {}}


# --- plugin output frames --------------------------------------------------------------------


class Heartbeat:
    """``{"event":"heartbeat"}``: the plugin is alive (and, the first time, ready)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = Heartbeat()


@dataclass(frozen=True, slots=True)
class LogFrame:
    """A record of the plugin's ``dify_plugin`` logger."""

    level: str
    message: str


@dataclass(frozen=True, slots=True)
class ProcessError:
    """``{"event":"error"}``: a plugin-wide error (unreadable request line, routing failure)."""

    session_id: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class SessionFrame:
    """A message on one session. ``kind`` is None when ``type`` is not one the protocol knows."""

    session_id: str | None
    kind: EventKind | None
    type: Any
    payload: Any


@dataclass(frozen=True, slots=True)
class ManifestEcho:
    """JSON without ``event``: the manifest the SDK prints at start-up in local mode."""

    data: Any


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """JSON with an ``event`` the protocol does not define (ignored, like the Go daemon does)."""

    event: Any


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line that is not a JSON object; ``text`` is its (shortened) text, for the log."""

    text: str
    reason: str


Frame = Heartbeat | LogFrame | ProcessError | SessionFrame | ManifestEcho | UnknownEvent | Unreadable


def _unreadable(line: bytes, reason: str) -> Unreadable:
    return Unreadable(bytes(line[:UNREADABLE_KEEP]).decode("utf-8", "replace"), reason)


_DECODER = json.JSONDecoder()


def split_joined_frames(line: bytes) -> list[bytes]:
    """The frames of a line that holds several (``{...}{...}``), or ``[]`` if it does not.

    The SDK writes a frame and the newline after it in two writes, from many threads at once and
    with no lock, so under load two frames can end up on one line. Dropping such a line loses
    both, and a lost ``end`` leaves its call hanging; they are split here instead (a slow path,
    only for lines that did not parse).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return []
    pieces: list[bytes] = []
    index, size = 0, len(text)
    while index < size:
        if text[index] in " \t\r\n":
            index += 1
            continue
        try:
            _, end = _DECODER.raw_decode(text, index)
        except ValueError:
            return []
        pieces.append(text[index:end].encode("utf-8"))
        index = end
    return pieces if len(pieces) > 1 else []


def parse_output_line(line: bytes) -> Frame:
    """Classify one plugin output line (§1.2)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return _unreadable(line, str(exc))
    if type(obj) is not dict:
        return _unreadable(line, "not a JSON object")
    event = obj.get("event")
    if event == "session":
        session_id = obj.get("session_id")
        if type(session_id) is not str:
            session_id = None
        message = obj.get("data")
        if type(message) is dict:
            kind_name = message.get("type")
            return SessionFrame(session_id, _KINDS.get(kind_name), kind_name, message.get("data"))
        return SessionFrame(session_id, None, None, message)
    if event == "heartbeat":
        return HEARTBEAT
    if event == "log":
        data = obj.get("data")
        if type(data) is dict:
            return LogFrame(str(data.get("level") or "INFO"), str(data.get("message", "")))
        return LogFrame("INFO", str(data))
    if event == "error":
        session_id = obj.get("session_id")
        return ProcessError(session_id if type(session_id) is str else None, obj.get("data"))
    if event is None:
        return ManifestEcho(obj)
    return UnknownEvent(event)
