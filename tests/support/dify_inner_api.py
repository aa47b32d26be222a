"""A stand-in for Dify's inner API: the daemon's backwards invocations end up here.

A real HTTP server on loopback speaking the formats of protocol.md §5:

- every route checks ``X-Inner-Api-Key``; a missing or wrong key is a **404** (as in Dify);
- stream routes (``invoke/llm``, ``invoke/llm/structured-output``, ``invoke/tool``, ``invoke/app``,
  ``invoke/tts``) answer length-prefixed binary frames:
  ``struct.pack("<BBHI", 0x0F, 0, 0x0A, len(payload)) + b"\\x00" * 6 + payload`` with
  ``payload = {"data": <chunk>, "error": ""}``;
- JSON routes (``invoke/text-embedding``, ``invoke/summary``, ``fetch/app/info``, ``invoke/encrypt``,
  ``invoke/rerank``, ``invoke/moderation``, ``upload/file/request``, ...) answer
  ``{"data": ..., "error": ""}``.

Every request is recorded (path relative to ``/inner/api/``, headers, JSON body). Failure modes, per
route or for all routes (``"*"``), via :meth:`DifyInnerAPI.behave`::

    with DifyInnerAPI(key="inner-key") as api:
        api.url                                   # "http://127.0.0.1:PORT" (DIFY_INNER_API_URL)
        api.behave("invoke/llm", status=500)      # answer 500
        api.behave("invoke/llm", garbage=True)    # a frame with a bad magic byte
        api.behave("*", stall=5.0)                # wait 5 s before answering (woken by stop())
        api.behave("invoke/llm", chunks=50, delay=0.01)   # 50 chunks, 10 ms apart
        api.behave("invoke/tool", error="tool failed")    # streams: a last frame with this error;
                                                          # JSON: {"data": null, "error": "..."}
        api.reset()                               # back to normal answers
        api.requests[0].json["tenant_id"]

The LLM answer is chunk ``i`` = word ``i`` of ``llm_text`` (see :meth:`DifyInnerAPI.expected_llm_text`).
The tool answer is ``tool_messages`` (a list of ToolInvokeMessage dicts, text messages by default),
or what ``tool_answer(body)`` returns when it is set (Dify runs the tool: a test may call a plugin).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .openai_server import LoopbackHTTPServer, RecordedRequest, _Responder

PREFIX = "/inner/api/"
MAGIC = 0x0F
HEADER_LENGTH = 0x0A
STREAM_ROUTES = frozenset({"invoke/llm", "invoke/llm/structured-output", "invoke/tool", "invoke/app", "invoke/tts"})
DEFAULT_LLM_TEXT = "Hello from the Dify inner API stand-in"

JsonAnswer = Any  # the ``data`` to answer, or a callable ``(request body) -> data``


def frame(payload: Mapping[str, Any] | bytes, magic: int = MAGIC) -> bytes:
    """One length-prefixed frame (14-byte header + payload), as Dify's ``length_prefixed_response``."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return struct.pack("<BBHI", magic, 0, HEADER_LENGTH, len(data)) + b"\x00" * 6 + data


def parse_frames(body: bytes) -> list[dict[str, Any]]:
    """Decode a whole length-prefixed body (for self-tests and assertions)."""
    out: list[dict[str, Any]] = []
    offset = 0
    while offset < len(body):
        magic, _, header_length, size = struct.unpack_from("<BBHI", body, offset)
        if magic != MAGIC or header_length != HEADER_LENGTH:
            raise ValueError(f"bad frame header at {offset}: magic={magic:#x} header={header_length:#x}")
        start = offset + 4 + header_length
        out.append(json.loads(body[start : start + size]))
        offset = start + size
    return out


@dataclass(frozen=True)
class Behaviour:
    """How a route answers. The defaults are Dify's normal answers."""

    status: int = 200  # non-200: answer this status (JSON body), nothing else
    garbage: bool = False  # answer one frame with a bad magic byte (stream routes) / non-JSON (JSON routes)
    stall: float = 0.0  # seconds to wait before answering (stop() wakes it)
    chunks: int | None = None  # stream routes: number of chunks (default: the route's natural answer)
    delay: float = 0.0  # stream routes: seconds between chunks
    error: str = ""  # non-empty: Dify's in-band error ({"data": null, "error": ...})


class DifyInnerAPI(LoopbackHTTPServer):
    """Dify's inner API stand-in; see the module docstring.

    Attributes: ``url`` (= ``base_url``, what ``DIFY_INNER_API_URL`` should be), ``key``,
    ``requests`` (every request, including rejected ones), ``llm_text``, ``tool_messages``,
    ``json_answers`` (route → ``data`` or a callable ``(body) -> data`` for JSON routes).
    """

    def __init__(self, key: str = "inner-api-key", *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.key = key
        self.llm_text = DEFAULT_LLM_TEXT
        self.tool_messages: list[dict[str, Any]] = [
            {"type": "text", "message": {"text": "tool says hi"}, "meta": None},
        ]
        self.tool_answer: Callable[[Mapping[str, Any]], list[dict[str, Any]]] | None = None
        self.json_answers: dict[str, JsonAnswer | Callable[[Mapping[str, Any]], Any]] = {
            "invoke/text-embedding": self._embedding,
            "invoke/multimodal-embedding": self._embedding,
            "invoke/summary": lambda body: {"summary": f"summary of {len(str(body.get('text', '')))} chars"},
            "fetch/app/info": lambda body: {
                "id": body.get("app_id"),
                "name": "Stand-in app",
                "mode": "chat",
                "description": "",
            },
            "invoke/encrypt": self._encrypt,
            "invoke/rerank": lambda body: {"model": body.get("model"), "docs": []},
            "invoke/moderation": lambda body: {"result": False},
            "invoke/speech2text": lambda body: {"result": "transcribed"},
            "upload/file/request": lambda body: {"url": f"{self.base_url}/files/upload/{body.get('filename')}"},
            "invoke/parameter-extractor": lambda body: {"inputs": {}, "outputs": {}, "process_data": {}},
            "invoke/question-classifier": lambda body: {"inputs": {}, "outputs": {}, "process_data": {}},
        }
        self._behaviours: dict[str, Behaviour] = {}

    @property
    def url(self) -> str:
        return self.base_url

    # -- configuration ---------------------------------------------------------------------

    def behave(self, route: str = "*", **changes: Any) -> Behaviour:
        """Set the behaviour of ``route`` (e.g. ``"invoke/llm"``, or ``"*"`` for every route)."""
        route = route.strip("/")
        if route.startswith("inner/api/"):
            route = route[len("inner/api/") :]
        behaviour = replace(self._behaviours.get(route, Behaviour()), **changes)
        with self._cond:
            self._behaviours[route] = behaviour
        return behaviour

    def reset(self) -> None:
        """Normal answers again on every route (recorded requests are kept)."""
        with self._cond:
            self._behaviours.clear()

    def behaviour_for(self, route: str) -> Behaviour:
        with self._cond:
            return self._behaviours.get(route) or self._behaviours.get("*") or Behaviour()

    def expected_llm_text(self, chunks: int | None = None) -> str:
        """Full LLM answer text for ``chunks`` chunks (default: one chunk per word of ``llm_text``)."""
        return "".join(self._llm_pieces(chunks))

    def calls(self, route: str) -> list[RecordedRequest]:
        """Recorded requests to ``route`` (relative to /inner/api/)."""
        return [r for r in self.requests if r.path == PREFIX + route.strip("/")]

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: _Responder) -> None:
        if request.header("X-Inner-Api-Key") != self.key or not request.path.startswith(PREFIX):
            respond.send(404, b"<!doctype html><title>404 Not Found</title>", "text/html; charset=utf-8")
            return
        route = request.path[len(PREFIX) :].strip("/")
        behaviour = self.behaviour_for(route)
        if behaviour.stall and not self.sleep(behaviour.stall):
            respond.abort()
        if behaviour.status != 200:
            respond.send_json(behaviour.status, {"message": f"configured failure {behaviour.status}"})
            return
        body = request.json if isinstance(request.json, Mapping) else {}
        if route in STREAM_ROUTES:
            self._stream(route, body, behaviour, respond)
        elif route in self.json_answers:
            self._json(route, body, behaviour, respond)
        else:
            respond.send(404, b"<!doctype html><title>404 Not Found</title>", "text/html; charset=utf-8")

    def _json(self, route: str, body: Mapping[str, Any], behaviour: Behaviour, respond: _Responder) -> None:
        if behaviour.garbage:
            respond.send(200, b"\x00not json", "application/json")
            return
        if behaviour.error:
            respond.send_json(200, {"data": None, "error": behaviour.error})
            return
        answer = self.json_answers[route]
        try:
            data = answer(body) if callable(answer) else answer
        except Exception as exc:  # Dify answers 200 with the error in band
            respond.send_json(200, {"data": None, "error": str(exc)})
            return
        respond.send_json(200, {"data": data, "error": ""})

    def _stream(self, route: str, body: Mapping[str, Any], behaviour: Behaviour, respond: _Responder) -> None:
        respond.start_stream()
        if behaviour.garbage:
            respond.chunk(frame({"data": {}, "error": ""}, magic=0x42))
            respond.end_stream()
            return
        for i, chunk in enumerate(self._chunks(route, body, behaviour.chunks)):
            if i and not self.sleep(behaviour.delay):
                respond.abort()
            respond.chunk(frame({"data": chunk, "error": ""}))
        if behaviour.error:
            respond.chunk(frame({"data": None, "error": behaviour.error}))
        respond.end_stream()

    # -- answers -----------------------------------------------------------------------------

    def _chunks(self, route: str, body: Mapping[str, Any], count: int | None) -> list[dict[str, Any]]:
        if route.startswith("invoke/llm"):
            return self._llm_chunks(str(body.get("model") or "stand-in-model"), count)
        if route == "invoke/tool":
            messages = self.tool_answer(body) if self.tool_answer is not None else self.tool_messages
            if count is None:
                return list(messages)
            return [messages[i % len(messages)] for i in range(count)]
        if route == "invoke/app":
            n = 3 if count is None else count
            return [{"event": "message", "answer": f"part {i}"} for i in range(n)]
        n = 1 if count is None else count  # invoke/tts
        return [{"result": "00" * 16} for _ in range(n)]

    def _llm_pieces(self, count: int | None) -> list[str]:
        words = self.llm_text.split() or ["x"]
        n = len(words) if count is None else count
        return [("" if i == 0 else " ") + words[i % len(words)] for i in range(n)]

    def _llm_chunks(self, model: str, count: int | None) -> list[dict[str, Any]]:
        pieces = self._llm_pieces(count)
        chunks: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunks.append(
                {
                    "model": model,
                    "prompt_messages": [],
                    "system_fingerprint": None,
                    "delta": {
                        "index": i,
                        "message": {"role": "assistant", "content": piece, "name": None, "tool_calls": []},
                        "usage": _usage(len(pieces)) if last else None,
                        "finish_reason": "stop" if last else None,
                    },
                }
            )
        return chunks

    @staticmethod
    def _embedding(body: Mapping[str, Any]) -> dict[str, Any]:
        texts = list(body.get("texts") or body.get("documents") or [])
        return {
            "model": body.get("model"),
            "embeddings": [[float(len(str(t))), 0.0, 1.0] for t in texts],
            "usage": {
                "tokens": len(texts),
                "total_tokens": len(texts),
                "unit_price": "0",
                "price_unit": "0",
                "total_price": "0",
                "currency": "USD",
                "latency": 0.0,
            },
        }

    @staticmethod
    def _encrypt(body: Mapping[str, Any]) -> dict[str, Any]:
        """Reversible stand-in: encrypt prefixes string values with ``enc:``, decrypt strips it."""
        opt = body.get("opt")
        data = dict(body.get("data") or {})
        if opt == "encrypt":
            return {"data": {k: f"enc:{v}" if isinstance(v, str) else v for k, v in data.items()}}
        if opt == "decrypt":
            return {"data": {k: v[4:] if isinstance(v, str) and v.startswith("enc:") else v for k, v in data.items()}}
        if opt == "clear":
            return {"data": {}}
        raise ValueError(f"Invalid opt: {opt}")


def _usage(completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": 1,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0",
        "completion_tokens": completion_tokens,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0",
        "total_tokens": 1 + completion_tokens,
        "total_price": "0",
        "currency": "USD",
        "latency": 0.0,
    }
