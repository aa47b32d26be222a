"""``FunctionChannel`` against a stand-in of the cloud (httpx.MockTransport): framing, errors,
retries, signature. No plugin involved; these are the HTTP facts of §3.2."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from plugin_daemon.protocol.messages import encode_request
from plugin_daemon.runtime import EventKind, SessionEvent
from plugin_daemon_serverless.invoke import FunctionChannel, InvokeOptions, backoff_delay
from plugin_daemon_serverless.signing import SIGNATURE_HEADER, sign, verify

pytestmark = pytest.mark.anyio

SESSION = "s-1"
BODY = encode_request(SESSION, {"user_id": "u", "type": "tool", "action": "invoke_tool"})
URL = "http://function.test/invoke?action=invoke_tool"
OPTIONS = InvokeOptions(max_line=1024, retries=2, backoff=0.001, signing_secret="secret")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def frame(kind: str, data: Any, session_id: str = SESSION) -> bytes:
    return json.dumps({"event": "session", "session_id": session_id, "data": {"type": kind, "data": data}}).encode()


def body_of(*lines: bytes) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for line in lines:
            yield line
            yield b"\n\n"

    return chunks


async def run(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> list[SessionEvent]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        channel = FunctionChannel(client, URL, SESSION, BODY, OPTIONS, **kwargs)
        return [event async for event in channel]


def message_of(event: SessionEvent) -> str:
    assert event.kind is EventKind.ERROR
    return str(event.data["message"])


async def test_frames_arrive_in_order_until_end_and_the_request_is_signed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        lines = (b'{"event":"log","data":{"level":"INFO","message":"hi"}}', frame("stream", {"n": 1}), frame("end", {}))
        return httpx.Response(200, content=body_of(*lines)())

    events = await run(handler)
    assert [(event.kind, event.data) for event in events] == [(EventKind.STREAM, {"n": 1}), (EventKind.END, {})]
    request = seen[0]
    assert request.content == BODY and str(request.url) == URL
    assert request.headers["dify-plugin-session-id"] == SESSION
    assert request.headers["content-type"] == "application/json"
    assert verify("secret", BODY, request.headers[SIGNATURE_HEADER])
    assert request.headers[SIGNATURE_HEADER] == sign("secret", BODY)


async def test_frames_joined_on_one_line_are_split() -> None:
    # the SDK writes a frame and its newline separately, from many threads: "{A}{B}" happens
    joined = frame("stream", {"n": 1}) + frame("stream", {"text": "}{"}) + frame("end", {})
    events = await run(lambda request: httpx.Response(200, content=body_of(joined)()))
    assert [(event.kind, event.data) for event in events] == [
        (EventKind.STREAM, {"n": 1}),
        (EventKind.STREAM, {"text": "}{"}),
        (EventKind.END, {}),
    ]


async def test_a_body_without_end_is_an_error() -> None:
    events = await run(lambda request: httpx.Response(200, content=body_of(frame("stream", {"n": 1}))()))
    assert events[0].kind is EventKind.STREAM
    assert "ended without an end frame" in message_of(events[-1])


async def test_cloud_errors_are_reported_and_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"x-amzn-ErrorType": "Runtime.ExitError", "x-amzn-RequestId": "req-7"}
        return httpx.Response(502, headers=headers, json={"errorMessage": "exited"})

    (event,) = await run(handler)
    assert len(calls) == 1
    assert "HTTP 502 (Runtime.ExitError)" in message_of(event) and "exited" in message_of(event)
    assert event.data["error_type"] == "PluginRuntimeError"
    assert event.data["args"] == {"status_code": 502, "request_id": "req-7"}


async def test_an_error_line_in_the_body_ends_the_call() -> None:
    line = b'{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"too big"}'
    (event,) = await run(lambda request: httpx.Response(200, content=body_of(line)()))
    assert "Function.ResponseSizeTooLarge: too big" in message_of(event)


async def test_refusals_are_retried_a_bounded_number_of_times() -> None:
    statuses = iter([503, 429, 200])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = next(statuses)
        if status != 200:
            return httpx.Response(status, headers={"Retry-After": "0"})
        return httpx.Response(200, content=body_of(frame("end", {}))())

    assert [event.kind for event in await run(handler)] == [EventKind.END]
    assert len(calls) == 3

    always = await run(lambda request: httpx.Response(502, text="Bad Gateway"))
    assert "HTTP 502 after 3 attempts: Bad Gateway" in message_of(always[0])


async def test_unreachable_function_is_retried_then_reported() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    (event,) = await run(handler)
    assert len(calls) == 3 and "could not be reached after 3 attempts" in message_of(event)


async def test_a_server_error_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, text="boom")

    (event,) = await run(handler)
    assert len(calls) == 1 and "HTTP 500: boom" in message_of(event)


async def test_a_gone_function_is_reported_to_the_runtime() -> None:
    gone = []
    (event,) = await run(lambda request: httpx.Response(404, text="no such function"), on_gone=lambda: gone.append(1))
    assert gone == [1] and "HTTP 404" in message_of(event)


async def test_protocol_violations_fail_the_session() -> None:
    invoke = frame("invoke", {"type": "storage", "backwards_request_id": "r", "request": {}})
    (event,) = await run(lambda request: httpx.Response(200, content=body_of(invoke)()))
    assert event.data["error_type"] == "serverless_event_not_supported"

    events = await run(
        lambda request: httpx.Response(200, content=body_of(frame("stream", {"x": 1}, "other"), frame("end", {}))())
    )
    assert [event.kind for event in events] == [EventKind.END]  # another session's frame is dropped

    huge = frame("stream", {"text": "x" * 5000})
    (event,) = await run(lambda request: httpx.Response(200, content=body_of(huge, frame("end", {}))()))
    assert event.data["error_type"] == "PluginResponseTooLarge"
    assert "PLUGIN_RUNTIME_MAX_BUFFER_SIZE" in message_of(event)


async def test_a_broken_connection_mid_answer_is_an_error() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield frame("stream", {"n": 1}) + b"\n\n"
        raise httpx.RemoteProtocolError("peer closed connection")

    events = await run(lambda request: httpx.Response(200, content=chunks()))
    assert events[0].kind is EventKind.STREAM
    assert "broke before the answer ended" in message_of(events[-1])


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    delays = [backoff_delay(2, 0.5) for _ in range(200)]
    assert all(1.0 <= delay <= 2.0 for delay in delays) and len(set(delays)) > 100
    assert backoff_delay(20, 0.5) <= 30.0
    assert backoff_delay(0, 0.001, "7") == 7.0
