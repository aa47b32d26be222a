"""One session as one HTTP call to a function: ``POST {function_url}/invoke?action=...``.

The body is the request line of §1.3; the answer is the plugin's output frames, read and
delivered as they arrive until ``end``. A refusal that is safe to repeat (502/503/429, or a
refused connection: nothing reached the plugin) is retried a bounded number of times with
jittered exponential backoff. Every way a call can fail ends in one ``error`` event that says
what happened: a non-2xx answer, a cloud error line, a broken connection, a body without
``end``, a frame over the size limit.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from plugin_daemon.protocol.framing import LineReader, OversizeLine
from plugin_daemon.protocol.messages import (
    LogFrame,
    ManifestEcho,
    ProcessError,
    SessionFrame,
    Unreadable,
    error_payload,
    parse_output_line,
    split_joined_frames,
)
from plugin_daemon.runtime import EventKind, SessionChannel, SessionEvent

from .httpstream import ResponseByteStream
from .signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503})
GONE_STATUS = frozenset({404, 410})
BACKOFF_CAP = 30.0
#: How much of a failed answer's body is quoted in the error.
ERROR_BODY_KEEP = 2000
#: After ``end``, how long the rest of the body may take to arrive (so the connection is reused).
DRAIN_DEADLINE = 1.0
DRAIN_MAX_BYTES = 64 * 1024
RUNTIME_ERROR = "PluginRuntimeError"


@dataclass(frozen=True)
class InvokeOptions:
    max_line: int  # PLUGIN_RUNTIME_MAX_BUFFER_SIZE
    retries: int  # MAX_SERVERLESS_RETRY_TIMES
    backoff: float  # seconds before the first retry
    signing_secret: str = ""


def backoff_delay(attempt: int, base: float, retry_after: str | None = None) -> float:
    """Exponential backoff with jitter (half to full delay), at least a numeric ``Retry-After``."""
    ceiling = min(BACKOFF_CAP, base * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after and retry_after.strip().isdigit():
        delay = max(delay, min(BACKOFF_CAP, float(retry_after)))
    return delay


def runtime_error(message: str, **args: Any) -> SessionEvent:
    return SessionEvent(
        EventKind.ERROR,
        error_payload(RUNTIME_ERROR, f"Plugin runtime request failed: {message}", {k: v for k, v in args.items() if v}),
    )


class FunctionChannel(SessionChannel):
    """The answer of one function call, as session events (iterate once)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        session_id: str,
        body: bytes,
        options: InvokeOptions,
        *,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._client = client
        self._url = url
        self._body = body
        self._options = options
        self._on_gone = on_gone
        self._events: AsyncGenerator[SessionEvent, None] | None = None
        self.attempts = 0

    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        if self._events is None:
            self._events = self._run()
        return self._events

    async def send(self, line: bytes) -> None:
        raise RuntimeError("a serverless function makes its backwards calls over /backwards-invocation/transaction")

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Dify-Plugin-Session-ID": self.session_id,
        }
        if self._options.signing_secret:
            headers[SIGNATURE_HEADER] = sign(self._options.signing_secret, self._body)
        return headers

    async def _run(self) -> AsyncGenerator[SessionEvent, None]:
        options = self._options
        retry = 0
        while True:
            self.attempts += 1
            request = self._client.build_request("POST", self._url, content=self._body, headers=self._headers())
            try:
                response = await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if retry < options.retries:
                    delay = backoff_delay(retry, options.backoff)
                    log.info(
                        "session %s: function unreachable (%r); retry %d in %.2f s",
                        self.session_id,
                        exc,
                        retry + 1,
                        delay,
                    )
                    retry += 1
                    await anyio.sleep(delay)
                    continue
                yield runtime_error(
                    f"the function at {self._url} could not be reached after {self.attempts} attempts: {exc!r}"
                )
                return
            except httpx.HTTPError as exc:
                yield runtime_error(f"sending the request to the function failed: {exc!r}")
                return
            status = response.status_code
            function_error = "x-amzn-errortype" in response.headers  # the function ran: never repeat it
            if status in RETRYABLE_STATUS and not function_error and retry < options.retries:
                await response.aclose()
                delay = backoff_delay(retry, options.backoff, response.headers.get("retry-after"))
                log.info(
                    "session %s: function answered %d; retry %d in %.2f s", self.session_id, status, retry + 1, delay
                )
                retry += 1
                await anyio.sleep(delay)
                continue
            break
        try:
            async for event in self._answer(response):
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _answer(self, response: httpx.Response) -> AsyncGenerator[SessionEvent, None]:
        status = response.status_code
        request_id = response.headers.get("x-amzn-requestid", "")
        cloud_error = response.headers.get("x-amzn-errortype", "")
        if status != 200 or cloud_error:
            body = await _read_some(response, ERROR_BODY_KEEP)
            if status in GONE_STATUS and self._on_gone is not None:
                self._on_gone()
            what = f"function answered HTTP {status}" + (f" ({cloud_error})" if cloud_error else "")
            if self.attempts > 1:
                what += f" after {self.attempts} attempts"
            yield runtime_error(f"{what}: {body}", status_code=status, request_id=request_id)
            return
        stream = ResponseByteStream(response)
        finished = False
        try:
            async for line in LineReader(stream, self._options.max_line):
                # frames the SDK wrote onto one line are split (see split_joined_frames)
                joined = split_joined_frames(line) if isinstance(line, bytes) and b"}{" in line else []
                items: list[bytes | OversizeLine] = [*joined] if joined else [line]
                for item in items:
                    event = self._event_of(item, request_id)
                    if event is None:
                        continue
                    finished = event.kind is EventKind.END or event.kind is EventKind.ERROR
                    yield event
                    if finished:
                        return
        except httpx.TimeoutException as exc:
            yield runtime_error(f"the function sent nothing for too long: {exc!r}", request_id=request_id)
            return
        except httpx.HTTPError as exc:
            yield runtime_error(
                f"the connection to the function broke before the answer ended (the function may have crashed): "
                f"{exc!r}",
                request_id=request_id,
            )
            return
        finally:
            if finished:
                await _drain(stream)
        yield runtime_error(
            "the function's answer ended without an end frame (it crashed, timed out or closed the stream)",
            request_id=request_id,
        )

    def _event_of(self, item: bytes | OversizeLine, request_id: str) -> SessionEvent | None:
        if isinstance(item, OversizeLine):
            if item.session_id in (None, self.session_id):
                return SessionEvent(
                    EventKind.ERROR,
                    error_payload(
                        "PluginResponseTooLarge",
                        f"a message of {item.size} bytes exceeded PLUGIN_RUNTIME_MAX_BUFFER_SIZE "
                        f"({self._options.max_line} bytes); the session was stopped",
                        {"size": item.size, "limit": self._options.max_line},
                    ),
                )
            return None
        frame = parse_output_line(item)
        if isinstance(frame, SessionFrame):
            if frame.session_id != self.session_id:
                log.warning("session %s: dropped a frame of session %s", self.session_id, frame.session_id)
                return None
            if frame.kind is None:
                return SessionEvent(
                    EventKind.ERROR,
                    error_payload("unknown_stream_message_type", f"unknown session message type {frame.type!r}"),
                )
            if frame.kind is EventKind.INVOKE:
                return SessionEvent(
                    EventKind.ERROR,
                    error_payload(
                        "serverless_event_not_supported",
                        "a serverless function must send backwards calls to /backwards-invocation/transaction",
                    ),
                )
            return SessionEvent(frame.kind, frame.payload)
        if isinstance(frame, ManifestEcho):
            data = frame.data
            if isinstance(data, dict) and ("errorType" in data or "errorMessage" in data):
                return runtime_error(
                    f"{data.get('errorType') or 'error'}: {data.get('errorMessage') or ''}", request_id=request_id
                )
            return None
        if isinstance(frame, ProcessError):
            if frame.session_id in (None, self.session_id):
                data = frame.data if isinstance(frame.data, dict) else {"error": str(frame.data)}
                message = str(data.get("error") or data.get("message") or data)
                return SessionEvent(
                    EventKind.ERROR, error_payload(str(data.get("error_type") or "PluginError"), message)
                )
            return None
        if isinstance(frame, LogFrame):
            log.info("plugin log (session %s) %s: %s", self.session_id, frame.level, frame.message)
        elif isinstance(frame, Unreadable):
            log.warning(
                "session %s: unreadable line from the function (%s): %s",
                self.session_id,
                frame.reason,
                frame.text[:200],
            )
        return None


async def _read_some(response: httpx.Response, limit: int) -> str:
    if response.is_stream_consumed:  # already read (a body given whole)
        return response.content[:limit].decode("utf-8", "replace").strip()
    data = bytearray()
    try:
        with anyio.move_on_after(5):
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) >= limit:
                    break
    except httpx.HTTPError:
        pass
    return bytes(data[:limit]).decode("utf-8", "replace").strip()


async def _drain(stream: ResponseByteStream) -> None:
    """Read what follows ``end`` (normally nothing) so the connection can go back to the pool."""
    received = 0
    with anyio.move_on_after(DRAIN_DEADLINE, shield=True):
        try:
            while received < DRAIN_MAX_BYTES:
                received += len(await stream.receive())
        except (anyio.EndOfStream, httpx.HTTPError):
            pass
