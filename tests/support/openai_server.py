"""A real OpenAI-compatible HTTP server on loopback, for tests and benchmarks.

``GET /v1/models`` and ``POST /v1/chat/completions`` (``stream`` true: SSE ``data: {...}`` chunks then
``data: [DONE]``; false: one JSON completion). The answer is deterministic: chunk ``i`` carries word
``i`` of ``text`` (cycling, with a leading space after the first), then a last chunk carries
``finish_reason: "stop"`` and ``usage``. :meth:`OpenAIServer.expected_content` gives the full text.

Per test: ``server.configure(chunks=200, delay=0.0, text="...", status=500, api_key="k", drop_after=3)``.
Per request: a model name like ``"mock-model?chunks=3&delay=0.05"`` overrides ``chunks``, ``delay``
and ``text`` for that request only (handy when many tests share one server).

Usable from sync and async tests::

    with OpenAIServer(chunks=5) as server:
        server.url          # "http://127.0.0.1:PORT/v1"
        server.requests     # RecordedRequest list

    async with OpenAIServer() as server: ...

This module also holds :class:`LoopbackHTTPServer`, the threaded stdlib server both stand-ins use.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog while the daemon streams every chunk as soon as it arrives"


@dataclass
class RecordedRequest:
    """One request a loopback server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """Header value, case-insensitive."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming
    #: each chunk goes out at once, as a real upstream's would (no Nagle wait for the client's ACK)
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=dict(self.headers.items()),
            body=body,
            json=parsed,
        )
        owner = self.server.owner
        owner._record(request)
        try:
            owner.handle(request, _Responder(self))
        except (ClientGone, ConnectionError, TimeoutError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of concurrent connections in benchmarks
    allow_reuse_address = True
    owner: LoopbackHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that leaves (reset, broken pipe) is normal here; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Responder:
    """What a handler may answer: a whole body, or a chunked stream."""

    def __init__(self, handler: _Handler) -> None:
        self._h = handler
        self._streaming = False

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        self._write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send(status, json.dumps(payload).encode())

    def start_stream(self, status: int = 200, content_type: str = "text/event-stream") -> None:
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        self._streaming = True

    def chunk(self, data: bytes) -> None:
        """Send one HTTP chunk (flushed at once)."""
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Drop the connection without finishing the response."""
        self._h.close_connection = True
        with contextlib.suppress(OSError):
            self._h.connection.shutdown(socket.SHUT_RDWR)
        raise ClientGone

    def _write(self, data: bytes) -> None:
        try:
            self._h.wfile.write(data)
            self._h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            raise ClientGone from exc


class LoopbackHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (random free port) that records requests.

    Subclasses implement :meth:`handle`. Start with :meth:`start` (or ``with``/``async with``);
    :meth:`stop` shuts the listener down, wakes handlers waiting in :meth:`sleep`, and closes the socket.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- to implement ----------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: _Responder) -> None:
        raise NotImplementedError

    # -- life cycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.owner = self
        self._server = server
        self.port = server.server_address[1]
        started = threading.Event()

        def serve() -> None:
            started.set()
            server.serve_forever(poll_interval=0.05)

        self._thread = threading.Thread(target=serve, name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start within {timeout}s")
        # the socket is already listening (bound in the constructor): connections queue until served
        return self

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    # -- helpers ---------------------------------------------------------------------------

    def sleep(self, seconds: float) -> bool:
        """Wait in a handler; returns False (stop at once) when the server is stopping."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def wait_for_requests(
        self,
        count: int = 1,
        timeout: float = 10.0,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` requests (matching ``predicate``) were received; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [r for r in self.requests if predicate is None or predicate(r)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"received {len(matching)} matching requests, wanted {count}")
                self._cond.wait(remaining)

    def clear_requests(self) -> None:
        with self._cond:
            self.requests.clear()


@dataclass
class StreamSettings:
    chunks: int = 5
    delay: float = 0.0
    text: str = DEFAULT_TEXT


class OpenAIServer(LoopbackHTTPServer):
    """OpenAI-compatible chat completions; see the module docstring.

    Attributes: ``url`` (``.../v1``), ``base_url``, ``requests``, ``model`` (listed by /v1/models),
    ``chunks``/``delay``/``text`` (defaults for every request), ``status`` (answer every request with
    this HTTP status when set), ``api_key`` (require ``Authorization: Bearer <key>`` when set),
    ``drop_after`` (close the connection after that many streamed chunks, no ``[DONE]``).
    """

    def __init__(
        self,
        *,
        chunks: int = 5,
        delay: float = 0.0,
        text: str = DEFAULT_TEXT,
        model: str = "mock-model",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.settings = StreamSettings(chunks=chunks, delay=delay, text=text)
        self.model = model
        self.api_key = api_key
        self.status: int | None = None
        self.drop_after: int | None = None
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return self.base_url + "/v1"

    _UNSET: Any = object()

    def configure(
        self,
        *,
        chunks: int | None = None,
        delay: float | None = None,
        text: str | None = None,
        status: int | None = _UNSET,
        api_key: str | None = _UNSET,
        drop_after: int | None = _UNSET,
    ) -> Self:
        """Change the answers of later requests (``None`` keeps chunks/delay/text as they are)."""
        if chunks is not None:
            self.settings.chunks = chunks
        if delay is not None:
            self.settings.delay = delay
        if text is not None:
            self.settings.text = text
        if status is not self._UNSET:
            self.status = status
        if api_key is not self._UNSET:
            self.api_key = api_key
        if drop_after is not self._UNSET:
            self.drop_after = drop_after
        return self

    # -- the deterministic answer ----------------------------------------------------------

    @staticmethod
    def pieces(chunks: int, text: str = DEFAULT_TEXT) -> list[str]:
        """Content of each streamed chunk."""
        words = text.split() or ["x"]
        return [("" if i == 0 else " ") + words[i % len(words)] for i in range(chunks)]

    def expected_content(self, chunks: int | None = None, text: str | None = None) -> str:
        """The full assistant text of an answer with these settings (default: the current ones)."""
        return "".join(self.pieces(self.settings.chunks if chunks is None else chunks, text or self.settings.text))

    def settings_for(self, model: str) -> StreamSettings:
        """Settings for a request naming ``model`` (``name?chunks=3&delay=0.1&text=a+b`` overrides)."""
        settings = StreamSettings(**vars(self.settings))
        if "?" in model:
            query = parse_qs(model.split("?", 1)[1])
            if "chunks" in query:
                settings.chunks = int(query["chunks"][0])
            if "delay" in query:
                settings.delay = float(query["delay"][0])
            if "text" in query:
                settings.text = query["text"][0]
        return settings

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: _Responder) -> None:
        if self.status is not None:
            respond.send_json(self.status, _error(f"configured failure {self.status}", "server_error"))
            return
        if self.api_key is not None and request.header("Authorization") != f"Bearer {self.api_key}":
            respond.send_json(401, _error("Incorrect API key provided", "invalid_request_error"))
            return
        if request.method == "GET" and request.path in ("/v1/models", "/models"):
            respond.send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "test"}],
                },
            )
        elif request.method == "POST" and request.path in ("/v1/chat/completions", "/chat/completions"):
            self._chat(request, respond)
        else:
            respond.send_json(404, _error(f"no route {request.method} {request.path}", "invalid_request_error"))

    def _chat(self, request: RecordedRequest, respond: _Responder) -> None:
        body = request.json if isinstance(request.json, Mapping) else {}
        model = str(body.get("model") or self.model)
        settings = self.settings_for(model)
        pieces = self.pieces(settings.chunks, settings.text)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        with self._lock:
            self._counter += 1
            completion_id = f"chatcmpl-{self._counter}"
        created = int(time.time())
        if not body.get("stream"):
            if not self.sleep(settings.delay * len(pieces)):
                respond.abort()
            respond.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        def event(delta: dict[str, Any], finish_reason: str | None, **extra: Any) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        respond.start_stream()
        for i, piece in enumerate(pieces):
            if self.drop_after is not None and i >= self.drop_after:
                respond.abort()
            if i and not self.sleep(settings.delay):
                respond.abort()
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            respond.chunk(event(delta, None))
        respond.chunk(event({}, "stop", usage=usage))
        respond.chunk(b"data: [DONE]\n\n")
        respond.end_stream()


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
