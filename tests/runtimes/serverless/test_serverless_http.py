"""The serverless runtime behind the HTTP API: real SDK plugins deployed through the connector's
``local`` provider, called through the daemon's dispatch routes, calling back over
``/backwards-invocation/transaction``. The conformance suite runs on the same daemon.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_daemon.protocol.messages import encode_request

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import (
    Target,
    assert_streamed_as_produced,
    call_tool,
    items_of,
    llm_request,
    plugin_error,
    sse,
    stream_llm,
)
from tests.runtimes.serverless.serverless_support import (
    SIGNING_SECRET,
    ConnectorServer,
    install,
    running_connector,
    serverless_settings,
)
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.openai_server import OpenAIServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TENANT = "tenant-serverless"


@pytest.fixture(scope="module")
def connector(home: Path, daemon_port: int) -> Iterator[ConnectorServer]:
    with running_connector(
        home / "connector", daemon_url=f"http://127.0.0.1:{daemon_port}", signing_secret=SIGNING_SECRET
    ) as running:
        yield running


@pytest.fixture(scope="module")
def server(home: Path, connector: ConnectorServer, inner_api: DifyInnerAPI, daemon_port: int) -> Iterator[DaemonServer]:
    # the functions call back from loopback, which the allowed networks include
    settings = serverless_settings(
        home / "daemon",
        connector,
        DIFY_INNER_API_URL=inner_api.url,
        SERVERLESS_TRANSACTION_ALLOWED_CIDRS="10.0.0.0/8, 127.0.0.0/8,::1",
    )
    with running_daemon(settings, port=daemon_port) as running:
        install(running, "echo_tool", TENANT)
        yield running


@pytest.fixture(scope="module")
def conformance(server: DaemonServer) -> Target:
    return Target(server.client, TENANT, flushes_before_crash=False)


@pytest.fixture(scope="module")
def mock_llm(server: DaemonServer) -> str:
    return install(server, "mock_llm", TENANT)


def test_installed_as_a_function(server: DaemonServer, connector: ConnectorServer) -> None:
    listing = server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}).json()
    echo = next(item for item in listing["data"]["list"] if item["plugin_id"] == "tester/echo_tool")
    assert echo["runtime_type"] == "serverless"
    function = connector.function_of("echo_tool")
    filename = echo["plugin_unique_identifier"].replace("/", "@").replace(":", "@") + ".difypkg"
    found = connector.client.get("/v1/runner/instances", params={"filename": filename}).json()
    assert [item["Name"] for item in found["Items"]] == [function["name"]]
    assert found["Items"][0]["Endpoint"] == f"{connector.url}/functions/{function['name']}"
    runtime = server.daemon.control_panel.runtime("serverless")
    assert runtime.health()["functions"][echo["plugin_unique_identifier"]] == found["Items"][0]["Endpoint"]


def test_tool_answer_from_a_function_in_serverless_mode(server: DaemonServer, daemon_port: int) -> None:
    target = Target(server.client, TENANT)
    assert items_of(call_tool(target, "echo", {"text": "over http"})) == [
        {"type": "text", "message": {"text": "over http"}, "meta": None}
    ]
    environ = items_of(call_tool(target, "env"))[0]["message"]["json_object"]["environ"]
    assert environ["INSTALL_METHOD"] == "serverless"
    assert environ["DIFY_PLUGIN_DAEMON_URL"] == f"http://127.0.0.1:{daemon_port}"
    assert environ["SERVERLESS_HOST"] == "127.0.0.1"
    # confined as a local plugin is (sandbox): a scratch of its own for HOME and TMPDIR
    assert "/.scratch/" in environ["HOME"] and "/.scratch/" in environ["TMPDIR"]
    assert not any(
        name in environ for name in ("SERVER_KEY", "DIFY_INNER_API_KEY", "DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY")
    )


def test_llm_answer_streams_chunk_by_chunk(server: DaemonServer, mock_llm: str) -> None:
    with OpenAIServer(chunks=5, delay=0.3) as upstream:
        arrivals = stream_llm(Target(server.client, TENANT), upstream.url)
        # each chunk left the function when the upstream produced it: 5 chunks 0.3 s apart
        assert_streamed_as_produced(arrivals, upstream.expected_content(), span=0.9)


def test_storage_backwards_calls_over_the_transaction_route(server: DaemonServer, inner_api: DifyInnerAPI) -> None:
    target = Target(server.client, TENANT)
    assert items_of(call_tool(target, "storage", {"op": "set", "key": "color", "value": "blue"}))
    got = items_of(call_tool(target, "storage", {"op": "get", "key": "color"}))
    assert got[0]["message"]["json_object"] == {"value": "blue"}
    assert items_of(call_tool(target, "storage", {"op": "delete", "key": "color"}))
    missing = plugin_error(call_tool(target, "storage", {"op": "get", "key": "color"})[-1])
    assert "load data failed" in missing["message"]
    inner_api.reset()
    items = items_of(call_tool(target, "llm", {"provider": "openai", "model": "gpt", "query": "hi"}))
    assert "".join(item["message"]["text"] for item in items if item["type"] == "text") == inner_api.expected_llm_text()
    assert inner_api.calls("invoke/llm")[-1].json["tenant_id"] == TENANT


def _invoke_frame(session_id: str, request: dict[str, Any], request_id: str = "r-1") -> bytes:
    frame = {
        "event": "session",
        "session_id": session_id,
        "data": {"type": "invoke", "data": {"type": "storage", "backwards_request_id": request_id, "request": request}},
    }
    return json.dumps(frame).encode() + b"\n\n"


STORAGE_ALLOWED = {"resource": {"permission": {"storage": {"enabled": True, "size": 1024}}}}


def _session(
    server: DaemonServer,
    runtime_type: str,
    *,
    plugin: str = "echo_tool",
    declaration: dict[str, Any] | None = None,
) -> Any:
    return server.daemon.sessions.create(
        tenant_id=TENANT,
        user_id="u",
        plugin_id=f"tester/{plugin}",
        identifier=f"tester/{plugin}:0.0.1@" + "0" * 64,
        runtime_type=runtime_type,
        access_type="tool",
        action="invoke_tool",
        declaration=STORAGE_ALLOWED if declaration is None else declaration,
    )


def _backwards(server: DaemonServer, session: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The backwards_response payloads answering one storage call of ``session``."""
    response = httpx.post(
        f"{server.url}/backwards-invocation/transaction",
        headers={"Dify-Plugin-Session-ID": session.id},
        content=_invoke_frame(session.id, request),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [json.loads(line)["data"] for line in response.text.split("\n") if line.strip()]


def test_transaction_session_is_bound_to_its_own_plugins_permissions(server: DaemonServer) -> None:
    allowed = _session(server, "serverless", plugin="echo_tool")
    neighbour = _session(server, "serverless", plugin="other_tool")
    denied = _session(server, "serverless", plugin="noperm_tool", declaration={"resource": {"permission": {}}})
    try:
        assert _backwards(server, allowed, {"opt": "set", "key": "secret", "value": "6f6b"})[0]["event"] == "response"
        # another plugin of the same tenant, calling with its own session, sees its own storage only
        other = _backwards(server, neighbour, {"opt": "get", "key": "secret"})
        assert other[0]["event"] == "error" and "6f6b" not in json.dumps(other)
        refused = _backwards(server, denied, {"opt": "get", "key": "secret"})
        assert refused[0]["event"] == "error"
        assert "permission denied" in refused[0]["message"] and "storage" in refused[0]["message"]
        own = _backwards(server, allowed, {"opt": "get", "key": "secret"})
        assert own[0]["event"] == "response" and own[0]["data"]["data"] == "6f6b"
    finally:
        for session in (allowed, neighbour, denied):
            server.daemon.sessions.end(session)


def test_transaction_route_refuses_sources_outside_the_allowed_networks(
    home: Path, connector: ConnectorServer, server: DaemonServer
) -> None:
    settings = serverless_settings(
        home / "daemon-cidr", connector, SERVERLESS_TRANSACTION_ALLOWED_CIDRS="10.0.0.0/8,fd00::/8"
    )
    with running_daemon(settings) as narrow:
        session = _session(narrow, "serverless")
        try:
            response = httpx.post(
                f"{narrow.url}/backwards-invocation/transaction",
                headers={"Dify-Plugin-Session-ID": session.id},
                content=_invoke_frame(session.id, {"opt": "set", "key": "k", "value": "1"}),
                timeout=10,
            )
            assert response.status_code == 403
            body = response.json()
            assert body["code"] == -403 and body["data"] is None
            assert "SERVERLESS_TRANSACTION_ALLOWED_CIDRS" in json.loads(body["message"])["message"]
            assert narrow.daemon.sessions.get(session.id) is session  # the session lives on
        finally:
            narrow.daemon.sessions.end(session)


def test_transaction_route_answers_backwards_response_lines(server: DaemonServer) -> None:
    session = _session(server, "serverless")
    try:
        response = server.client.post(
            "/backwards-invocation/transaction",
            headers={"Dify-Plugin-Session-ID": session.id, "X-Api-Key": ""},
            content=_invoke_frame(session.id, {"opt": "set", "key": "k", "value": "76"}),
        )
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [json.loads(line) for line in response.text.split("\n") if line]
        assert [line["event"] for line in lines] == ["backwards_response", "backwards_response"]
        assert [line["data"]["event"] for line in lines] == ["response", "end"]
        assert all(line["session_id"] == session.id and line["data"]["backwards_request_id"] == "r-1" for line in lines)
    finally:
        server.daemon.sessions.end(session)


def test_transaction_route_refuses_what_is_not_a_live_serverless_session(server: DaemonServer) -> None:
    url = f"{server.url}/backwards-invocation/transaction"

    def post(session_id: str, body: bytes) -> httpx.Response:
        return httpx.post(url, headers={"Dify-Plugin-Session-ID": session_id}, content=body, timeout=10)

    unknown = post("no-such-session", _invoke_frame("no-such-session", {"opt": "get", "key": "k"}, "r-9"))
    assert unknown.status_code == 400
    assert unknown.json()["backwards_request_id"] == "r-9"
    assert unknown.json()["event"] == "error"
    assert unknown.json()["message"] == "failed to get session info from cache"
    assert unknown.json()["data"]["error_type"] == "SessionNotFound"

    local = _session(server, "local")
    ended = _session(server, "serverless")
    server.daemon.sessions.end(ended)
    try:
        for session in (local, ended):
            refused = post(session.id, _invoke_frame(session.id, {"opt": "get", "key": "k"}))
            assert refused.json()["data"]["error_type"] == "SessionNotFound", session.runtime_type
    finally:
        server.daemon.sessions.end(local)

    live = _session(server, "serverless")
    try:
        other = post(live.id, _invoke_frame("another-session", {"opt": "get", "key": "k"}))
        assert other.json()["data"]["error_type"] == "SessionNotFound"
        assert post(live.id, b"not json\n\n").status_code == 400
        limit = server.settings.MAX_SERVERLESS_TRANSACTION_BYTES
        too_big = post(live.id, _invoke_frame(live.id, {"opt": "set", "key": "k", "value": "0" * (limit + 1)}))
        assert too_big.status_code == 413
    finally:
        server.daemon.sessions.end(live)


def test_function_dying_mid_stream_fails_the_call_at_once(
    server: DaemonServer, connector: ConnectorServer, mock_llm: str
) -> None:
    with OpenAIServer(chunks=200, delay=0.1) as upstream:
        events = []
        with server.client.stream(
            "POST",
            f"/plugin/{TENANT}/dispatch/llm/invoke",
            headers={"X-Plugin-ID": "tester/mock_llm"},
            json=llm_request(upstream.url),
            timeout=60,
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if line:
                    events.append(json.loads(line[len("data: ") :]))
                    break
            pid = connector.function_of("mock_llm")["pid"]
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            for line in lines:
                if line:
                    events.append(json.loads(line[len("data: ") :]))
            ended_at = time.monotonic()
    assert events[0]["code"] == 0
    assert events[-1]["code"] != 0 and len(events) < 200
    message = json.loads(json.loads(events[-1]["message"])["message"])["message"]
    assert "Runtime.ExitError: the function exited with code -9 while handling the call" in message, message
    assert ended_at - killed_at < 5
    wait_for(lambda: connector.function_of("mock_llm")["state"] == "stopped", 10, "the killed function to be seen")
    with OpenAIServer(chunks=3) as upstream:
        again = sse(
            server.client.post(
                f"/plugin/{TENANT}/dispatch/llm/invoke",
                headers={"X-Plugin-ID": "tester/mock_llm"},
                json=llm_request(upstream.url),
                timeout=60,
            )
        )
    assert all(event["code"] == 0 for event in again), again


def _fault(connector: ConnectorServer, plugin: str, status: int, times: int) -> None:
    name = connector.function_of(plugin)["name"]
    response = connector.client.post("/v1/emulator/faults", json={"function": name, "status": status, "times": times})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("status", [502, 503, 429])
def test_function_refusing_twice_then_working(server: DaemonServer, connector: ConnectorServer, status: int) -> None:
    target = Target(server.client, TENANT)
    calls = connector.function_of("echo_tool")["calls"]
    _fault(connector, "echo_tool", status, 2)
    assert items_of(call_tool(target, "echo", {"text": "third time"}))[0]["message"] == {"text": "third time"}
    assert connector.function_of("echo_tool")["calls"] == calls + 1  # the refusals never reached the plugin


def test_retries_are_bounded(server: DaemonServer, connector: ConnectorServer) -> None:
    retries = server.settings.MAX_SERVERLESS_RETRY_TIMES
    _fault(connector, "echo_tool", 502, retries + 5)
    try:
        error = plugin_error(call_tool(Target(server.client, TENANT), "echo", {"text": "x"})[-1])
        assert error["error_type"] == "PluginRuntimeError"
        assert f"HTTP 502 after {retries + 1} attempts" in error["message"]
    finally:
        _fault(connector, "echo_tool", 502, 0)


def test_idle_function_scales_to_zero_and_starts_again(server: DaemonServer, connector: ConnectorServer) -> None:
    target = Target(server.client, TENANT)
    first = items_of(call_tool(target, "pid"))[0]["message"]["json_object"]["pid"]
    cold_starts = connector.function_of("echo_tool")["cold_starts"]
    saved = connector.provider.idle_timeout
    connector.provider.idle_timeout = 0.3
    try:
        wait_for(lambda: connector.function_of("echo_tool")["state"] == "stopped", 15, "scale to zero")
    finally:
        connector.provider.idle_timeout = saved
    assert connector.function_of("echo_tool")["pid"] is None
    second = items_of(call_tool(target, "pid"))[0]["message"]["json_object"]["pid"]
    assert second != first
    assert connector.function_of("echo_tool")["cold_starts"] == cold_starts + 1


def test_request_over_the_limit_is_refused_before_sending(server: DaemonServer, connector: ConnectorServer) -> None:
    calls = connector.function_of("echo_tool")["calls"]
    limit = server.settings.MAX_SERVERLESS_REQUEST_BYTES
    events = call_tool(Target(server.client, TENANT), "echo", {"text": "x" * (limit + 1)})
    outer = json.loads(events[-1]["message"])
    assert outer["error_type"] == "ServerlessPayloadTooLargeError"
    assert "MAX_SERVERLESS_REQUEST_BYTES" in outer["message"]
    assert connector.function_of("echo_tool")["calls"] == calls


def test_function_refuses_calls_not_signed_by_the_daemon(connector: ConnectorServer) -> None:
    url = f"{connector.url}/functions/{connector.function_of('echo_tool')['name']}/invoke?action=invoke_tool"
    body = encode_request("s-1", {"user_id": "u", "type": "tool", "action": "invoke_tool"})
    assert httpx.post(url, content=body, timeout=10).status_code == 401
    wrong = httpx.post(url, content=body, headers={"X-Dify-Plugin-Signature": "sha256=00"}, timeout=10)
    assert wrong.status_code == 401


def test_local_and_serverless_installations_side_by_side(server: DaemonServer, connector: ConnectorServer) -> None:
    install(server, "noperm_tool", TENANT, meta={"runtime_type": "local"})
    listing = server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}).json()
    runtimes = {item["plugin_id"]: item["runtime_type"] for item in listing["data"]["list"]}
    assert runtimes["tester/noperm_tool"] == "local" and runtimes["tester/echo_tool"] == "serverless"
    assert not any(f["identifier"].startswith("tester/noperm_tool:") for f in connector.functions().values())
    target = Target(server.client, TENANT)
    echo = call_tool(target, "echo", {"text": "local"}, plugin_id="tester/noperm_tool", provider="noperm_tool")
    assert items_of(echo)[0]["message"] == {"text": "local"}
    assert items_of(call_tool(target, "echo", {"text": "remote"}))[0]["message"] == {"text": "remote"}


def _llm_frame(session_id: str) -> bytes:
    request = {"provider": "openai", "model": "gpt", "model_type": "llm", "prompt_messages": [], "stream": True}
    frame = {
        "event": "session",
        "session_id": session_id,
        "data": {"type": "invoke", "data": {"type": "llm", "backwards_request_id": "r-llm", "request": request}},
    }
    return json.dumps(frame).encode() + b"\n\n"


def test_slow_backwards_call_gets_heartbeats_then_its_answer_or_a_deadline(
    server: DaemonServer, inner_api: DifyInnerAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plugin_daemon_serverless.transaction as transaction

    monkeypatch.setattr(transaction, "HEARTBEAT_INTERVAL", 0.05)
    session = _session(server, "serverless")
    session.declaration = {"resource": {"permission": {"model": {"enabled": True, "llm": True}}}}
    headers = {"Dify-Plugin-Session-ID": session.id}
    url = f"{server.url}/backwards-invocation/transaction"
    try:
        inner_api.reset()
        inner_api.behave("invoke/llm", stall=0.5)
        body = httpx.post(url, headers=headers, content=_llm_frame(session.id), timeout=30).content
        assert body.startswith(b"\n\n")  # heartbeats while Dify thinks
        lines = [json.loads(line) for line in body.split(b"\n") if line.strip()]
        assert [line["data"]["event"] for line in lines][-1] == "end"
        assert "".join(line["data"]["data"]["delta"]["message"]["content"] for line in lines[:-1])

        inner_api.behave("invoke/llm", stall=10)
        monkeypatch.setattr(server.settings, "MAX_SERVERLESS_TRANSACTION_TIMEOUT", 0.5)
        started = time.monotonic()
        body = httpx.post(url, headers=headers, content=_llm_frame(session.id), timeout=30).content
        assert time.monotonic() - started < 5
        lines = [json.loads(line) for line in body.split(b"\n") if line.strip()]
        assert [line["data"]["event"] for line in lines] == ["error", "end"]
        assert "MAX_SERVERLESS_TRANSACTION_TIMEOUT" in lines[0]["data"]["message"]
    finally:
        inner_api.reset()
        server.daemon.sessions.end(session)
