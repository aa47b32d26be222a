"""The runtime conformance suite: what every runtime must do, seen through Dify's HTTP API.

A runtime's test module provides a ``conformance`` fixture (a :class:`Target`: a running daemon
with the ``tests/plugins/echo_tool`` plugin installed and ready on that runtime for ``TENANT``)
and imports the tests: ``from tests.conformance.suite import *  # noqa: F403``.

Local, debug and serverless runtimes run it, and so can a third party's.
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "Target",
    "call_tool",
    "test_blob_chunks_pass_through",
    "test_credentials_are_validated",
    "test_echo",
    "test_many_sessions_run_at_once",
    "test_multi_message_kinds",
    "test_oversize_frame_fails_only_its_session",
    "test_plugin_dying_mid_request_fails_at_once",
    "test_plugin_error_reaches_dify_as_plugin_invoke_error",
    "test_storage_round_trip",
    "test_unknown_tool_is_an_error",
]

PLUGIN_ID = "tester/echo_tool"
PROVIDER = "echo_tool"


@dataclass
class Target:
    client: httpx.Client
    tenant: str
    #: a runtime whose plugin cannot come back after dying on its own (e.g. a debug plugin that
    #: exited) sets this False; the crash test then only checks the immediate error
    recovers_after_crash: bool = True
    #: a transport where the SDK queues frames inside the process (serverless: HTTP answers are
    #: written by another greenlet) loses the frame a plugin yields just before ``os._exit``; it
    #: sets this False and the crash test then checks the error and the recovery only
    flushes_before_crash: bool = True


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[len("data: ") :]) for line in response.text.split("\n") if line]


def call_tool(
    target: Target,
    tool: str,
    parameters: dict[str, Any] | None = None,
    *,
    plugin_id: str = PLUGIN_ID,
    provider: str = PROVIDER,
) -> list[dict[str, Any]]:
    response = target.client.post(
        f"/plugin/{target.tenant}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": plugin_id},
        json={
            "user_id": "user-1",
            "data": {
                "provider": provider,
                "tool": tool,
                "tool_parameters": parameters or {},
                "credentials": {},
                "credential_type": "api-key",
            },
        },
        timeout=120,
    )
    return sse(response)


def items_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert all(event["code"] == 0 for event in events), events
    return [event["data"] for event in events]


def plugin_error(event: dict[str, Any]) -> dict[str, Any]:
    assert event["code"] == -500 and event["data"] is None
    outer = json.loads(event["message"])
    assert outer["error_type"] == "PluginInvokeError", outer
    return json.loads(outer["message"])


def test_echo(conformance: Target) -> None:
    assert items_of(call_tool(conformance, "echo", {"text": "hello world"})) == [
        {"type": "text", "message": {"text": "hello world"}, "meta": None}
    ]


def test_multi_message_kinds(conformance: Target) -> None:
    items = items_of(call_tool(conformance, "multi"))
    assert [item["type"] for item in items] == ["text", "json", "variable", "variable"]
    assert items[1]["message"] == {"json_object": {"k": 1}}
    assert items[2]["message"] == {"variable_name": "v", "variable_value": 42, "stream": False}
    assert items[3]["message"]["stream"] is True


def test_blob_chunks_pass_through(conformance: Target) -> None:
    items = items_of(call_tool(conformance, "blob", {"size": 20000}))
    assert all(item["type"] == "blob_chunk" for item in items)
    assert [item["message"]["sequence"] for item in items] == list(range(len(items)))
    assert items[-1]["message"]["end"] is True
    data = b"".join(base64.b64decode(item["message"]["blob"]) for item in items)
    assert len(data) == 20000
    assert items[0]["meta"] == {"mime_type": "text/plain"}


def test_plugin_error_reaches_dify_as_plugin_invoke_error(conformance: Target) -> None:
    events = call_tool(conformance, "fail")
    assert events[0]["data"]["message"] == {"text": "before"}
    error = plugin_error(events[1])
    assert error["error_type"] == "ValueError" and error["message"] == "boom"
    assert len(events) == 2


def test_unknown_tool_is_an_error(conformance: Target) -> None:
    events = call_tool(conformance, "no_such_tool")
    assert "no_such_tool" in plugin_error(events[-1])["message"]


def test_credentials_are_validated(conformance: Target) -> None:
    def validate(credentials: dict[str, Any]) -> list[dict[str, Any]]:
        return sse(
            conformance.client.post(
                f"/plugin/{conformance.tenant}/dispatch/tool/validate_credentials",
                headers={"X-Plugin-ID": PLUGIN_ID},
                json={"user_id": "u", "data": {"provider": PROVIDER, "credentials": credentials}},
            )
        )

    assert items_of(validate({"api_key": "good"})) == [{"result": True}]
    refused = plugin_error(validate({"api_key": "bad"})[-1])
    assert refused["error_type"] == "ToolProviderCredentialValidationError"


def test_storage_round_trip(conformance: Target) -> None:
    set_items = items_of(call_tool(conformance, "storage", {"op": "set", "key": "k1", "value": "v1"}))
    assert set_items[0]["message"]["json_object"] == {"ok": True}
    got = items_of(call_tool(conformance, "storage", {"op": "get", "key": "k1"}))
    assert got[0]["message"]["json_object"] == {"value": "v1"}
    exists = items_of(call_tool(conformance, "storage", {"op": "exist", "key": "k1"}))
    assert exists[0]["message"]["json_object"] == {"exists": True}


def test_many_sessions_run_at_once(conformance: Target) -> None:
    """20 calls that each sleep 1 s finish in far less than 20 s: sessions are multiplexed."""
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: call_tool(conformance, "sleep", {"seconds": 1}), range(20)))
    elapsed = time.monotonic() - started
    assert all(items_of(events) == [{"type": "text", "message": {"text": "slept"}, "meta": None}] for events in results)
    assert elapsed < 10, f"20 concurrent 1-second calls took {elapsed:.1f} s"


def test_oversize_frame_fails_only_its_session(conformance: Target) -> None:
    events = call_tool(conformance, "huge", {"size": 6 * 1024 * 1024})
    assert events[-1]["code"] != 0
    message = json.loads(events[-1]["message"])
    assert "PLUGIN_RUNTIME_MAX_BUFFER_SIZE" in message["message"] or "too large" in message["message"].lower()
    assert items_of(call_tool(conformance, "echo", {"text": "still here"}))[0]["message"] == {"text": "still here"}


def test_plugin_dying_mid_request_fails_at_once(conformance: Target) -> None:
    started = time.monotonic()
    events = call_tool(conformance, "crash")
    elapsed = time.monotonic() - started
    if conformance.flushes_before_crash:
        assert events[0]["data"]["message"] == {"text": "dying"}
    assert events[-1]["code"] != 0
    assert elapsed < 30, f"the error took {elapsed:.1f} s to arrive"
    if conformance.recovers_after_crash:
        deadline = time.monotonic() + 60
        while True:
            events = call_tool(conformance, "echo", {"text": "back"})
            if events[0]["code"] == 0:
                break
            assert time.monotonic() < deadline, f"plugin did not come back: {events}"
            time.sleep(0.2)
        assert items_of(events)[0]["message"] == {"text": "back"}


MODEL_PLUGIN_ID = "tester/mock_llm"


def llm_request(upstream_url: str, model: str = "mock-model") -> dict[str, Any]:
    """A streamed ``llm/invoke`` body for tests/plugins/mock_llm reading from ``upstream_url``."""
    return {
        "user_id": "u",
        "data": {
            "provider": "mock_llm",
            "model": model,
            "model_type": "llm",
            "credentials": {"endpoint_url": upstream_url},
            "prompt_messages": [{"role": "user", "content": "hello"}],
            "model_parameters": {},
            "stop": [],
            "tools": [],
            "stream": True,
        },
    }


def stream_llm(target: Target, upstream_url: str, model: str = "mock-model") -> list[tuple[float, dict[str, Any]]]:
    """Each SSE event of a streamed LLM answer with the moment it arrived."""
    arrivals = []
    with target.client.stream(
        "POST",
        f"/plugin/{target.tenant}/dispatch/llm/invoke",
        headers={"X-Plugin-ID": MODEL_PLUGIN_ID},
        json=llm_request(upstream_url, model),
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic(), json.loads(line[len("data: ") :])))
    return arrivals


def assert_streamed_as_produced(arrivals: list[tuple[float, dict[str, Any]]], expected: str, span: float) -> None:
    """The whole answer arrived, in order, and spread over ``span`` seconds: nothing was buffered."""
    assert all(event["code"] == 0 for _, event in arrivals), arrivals
    chunks = [event["data"] for _, event in arrivals]
    assert "".join(chunk["delta"]["message"]["content"] for chunk in chunks) == expected
    assert chunks[-1]["delta"]["finish_reason"] == "stop"
    assert arrivals[-1][0] - arrivals[0][0] > span
