"""The backwards invoker against a real HTTP stand-in of Dify's inner API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from plugin_daemon.backwards.invoker import BackwardsInvoker
from plugin_daemon.runtime import SessionChannel, SessionEvent
from plugin_daemon.sessions import Session
from plugin_daemon.store.database import Database

from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = pytest.mark.anyio

PERMITTED = {
    "resource": {
        "permission": {
            "tool": {"enabled": True},
            "model": {"enabled": True, "llm": True, "text_embedding": True},
            "storage": {"enabled": True, "size": 1024},
        }
    }
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LineCollector(SessionChannel):
    """Collects what the invoker writes back on a session."""

    session_id = "s-1"

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        raise NotImplementedError

    async def send(self, line: bytes) -> None:
        self.lines.append(orjson.loads(line))

    async def aclose(self) -> None:
        pass

    def events(self) -> list[tuple[str, str, Any]]:
        return [(line["data"]["event"], line["data"]["message"], line["data"]["data"]) for line in self.lines]


@pytest.fixture
def inner_api():  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key="inner-key") as api:
        yield api


@pytest.fixture
def invoker(make_settings, inner_api, tmp_path):  # type: ignore[no-untyped-def]
    settings = make_settings(
        DIFY_INNER_API_URL=inner_api.url, DIFY_INNER_API_KEY="inner-key", DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT=3000
    )
    database = Database(f"sqlite:///{tmp_path / 'b.db'}")
    yield BackwardsInvoker(settings, database)
    database.dispose()


def session(access_type: str = "tool", declaration: dict[str, Any] | None = None) -> Session:
    return Session(
        id="s-1",
        tenant_id="tenant-9",
        user_id="user-7",
        plugin_id="tester/echo_tool",
        identifier="tester/echo_tool:0.0.1@" + "0" * 64,
        runtime_type="local",
        access_type=access_type,
        action="invoke_tool",
        declaration=PERMITTED if declaration is None else declaration,
    )


def invoke(invoke_type: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"type": invoke_type, "backwards_request_id": "req-1", "request": request}


async def test_llm_stream_is_relayed_chunk_by_chunk(invoker, inner_api) -> None:  # type: ignore[no-untyped-def]
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("llm", {"provider": "p", "model": "m", "prompt_messages": []}))
    events = channel.events()
    assert events[-1] == ("end", "", None)
    chunks = events[:-1]
    assert chunks and all(event == "response" and message == "stream" for event, message, _ in chunks)
    text = "".join(data["delta"]["message"]["content"] for _, _, data in chunks)
    assert text == inner_api.expected_llm_text()
    line = channel.lines[0]
    assert line["session_id"] == "s-1" and line["event"] == "backwards_response"
    assert line["data"]["backwards_request_id"] == "req-1"
    sent = inner_api.calls("invoke/llm")[0]
    assert sent.header("X-Inner-Api-Key") == "inner-key"
    assert sent.json["tenant_id"] == "tenant-9" and sent.json["user_id"] == "user-7" and sent.json["type"] == "llm"


async def test_json_answer_is_one_struct(invoker) -> None:  # type: ignore[no-untyped-def]
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("text_embedding", {"texts": ["a", "b"], "model": "m"}))
    (event, message, data), end = channel.events()
    assert (event, message) == ("response", "struct") and isinstance(data, dict)
    assert end == ("end", "", None)


async def test_a_failed_json_answer_keeps_difys_explanation(invoker, inner_api) -> None:  # type: ignore[no-untyped-def]
    inner_api.behave("invoke/text-embedding", status=400)
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("text_embedding", {"texts": ["a"], "model": "m"}))
    (event, message, _), end = channel.events()
    assert event == "error" and end == ("end", "", None)
    assert 'status code: 400 and respond with: {"message": "configured failure 400"}' in message


async def test_storage_is_served_by_the_daemon(invoker, inner_api) -> None:  # type: ignore[no-untyped-def]
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("storage", {"opt": "set", "key": "k", "value": "6869"}))
    await invoker.handle(session(), channel, invoke("storage", {"opt": "get", "key": "k"}))
    assert channel.events() == [
        ("response", "struct", {"data": "ok"}),
        ("end", "", None),
        ("response", "struct", {"data": "6869"}),
        ("end", "", None),
    ]
    assert inner_api.requests == []


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (
            {"status": 500},
            'invoke llm model failed: request failed with status code: 500 and respond with: {"message": '
            '"configured failure 500"}',
        ),
        ({"garbage": True}, "magic byte"),
        ({"error": "model exploded"}, "request failed: model exploded"),
    ],
)
async def test_inner_api_failures_become_an_error_then_end(invoker, inner_api, behaviour, expected) -> None:  # type: ignore[no-untyped-def]
    inner_api.behave("invoke/llm", **behaviour)
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("llm", {"provider": "p", "model": "m"}))
    events = channel.events()
    assert events[-1] == ("end", "", None)
    error = [e for e in events if e[0] == "error"]
    assert len(error) == 1 and expected in error[0][1]


async def test_a_slow_dify_hits_the_read_deadline(invoker, inner_api) -> None:  # type: ignore[no-untyped-def]
    inner_api.behave("invoke/text-embedding", stall=10)
    channel = LineCollector()
    await invoker.handle(session(), channel, invoke("text_embedding", {"texts": ["a"]}))
    events = channel.events()
    assert events[0] == ("error", "Dify did not answer within 3 s (DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT)", None)
    assert events[-1] == ("end", "", None)


async def test_a_wrong_inner_key_reads_as_a_clear_error(make_settings, inner_api, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(DIFY_INNER_API_URL=inner_api.url, DIFY_INNER_API_KEY="wrong")
    database = Database(f"sqlite:///{tmp_path / 'w.db'}")
    channel = LineCollector()
    await BackwardsInvoker(settings, database).handle(session(), channel, invoke("tool", {"provider": "x"}))
    database.dispose()
    assert "status code: 404" in channel.events()[0][1]


@pytest.mark.parametrize(
    ("payload", "access", "declaration", "expected"),
    [
        (invoke("llm", {}), "tool", {}, "permission denied, you need to enable llm access in plugin manifest"),
        (invoke("storage", {"opt": "get", "key": "k"}), "tool", {}, "enable storage access"),
        (invoke("app", {}), "tool", PERMITTED, "enable app access"),
        (invoke("llm", {}), "model", PERMITTED, "you can not invoke dify from model"),
        ({"type": "llm", "request": {}}, "tool", PERMITTED, "backwards_request_id"),
        ({"type": "llm", "backwards_request_id": "r", "request": "x"}, "tool", PERMITTED, "missing request"),
        (invoke("teleport", {}), "tool", PERMITTED, "unsupported invoke type: teleport"),
    ],
)
async def test_refusals(invoker, inner_api, payload, access, declaration, expected) -> None:  # type: ignore[no-untyped-def]
    channel = LineCollector()
    await invoker.handle(session(access, declaration), channel, payload)
    (event, message, _), end = channel.events()
    assert event == "error" and expected in message
    assert end[0] == "end"
    assert inner_api.requests == []
