"""The debug runtime as a developer and Dify use it: real SDK plugins over real TCP on loopback.

One daemon per module; echo_tool runs with ``INSTALL_METHOD=remote`` against it (restarted by the
``echo`` fixture whenever a test killed it), and the shared conformance suite runs on it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import (
    Target,
    assert_streamed_as_produced,
    call_tool,
    items_of,
    plugin_error,
    sse,
    stream_llm,
)
from tests.runtimes.debug.debug_support import (
    TENANT,
    SdkPlugin,
    debug_port,
    debug_settings,
    debugging_key,
    installations,
    wait_installed,
    wait_uninstalled,
)
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.openai_server import OpenAIServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ECHO = "tester/echo_tool"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("debug-http-home")


@pytest.fixture(scope="module")
def server(home: Path, inner_api: DifyInnerAPI) -> Iterator[DaemonServer]:
    settings = debug_settings(
        home,
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT=5000,
        PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE=1,  # a killed plugin is uninstalled soon (test_debug_pauses: the grace)
    )
    with running_daemon(settings) as running:
        yield running


@pytest.fixture(scope="module")
def echo_process(server: DaemonServer, home: Path) -> Iterator[SdkPlugin]:
    plugin = SdkPlugin("echo_tool", debug_port(server), debugging_key(server.client), home / "plugin-logs")
    try:
        yield plugin
    finally:
        plugin.kill()


@pytest.fixture
def echo(server: DaemonServer, echo_process: SdkPlugin) -> SdkPlugin:
    """echo_tool connected and installed (started again if a test killed it).

    A plugin a test crashed may still be exiting when the next test starts: the daemon has already
    seen its connection close, so what the daemon lists decides, not whether the process is gone yet.
    """
    live = any(plugin["plugin_id"] == ECHO and plugin["alive"] for plugin in connected(server))
    if not echo_process.alive or not live:
        echo_process.kill()  # waits for a crashing process to end
        started = time.time()
        echo_process.start()
        wait_for(
            lambda: any(plugin["connected_at"] >= started - 1 for plugin in connected(server)),
            60,
            "echo_tool to connect",
        )
    wait_installed(server.client, ECHO)
    return echo_process


@pytest.fixture
def conformance(server: DaemonServer, echo: SdkPlugin) -> Target:
    return Target(server.client, TENANT, recovers_after_crash=False)


def open_call(target: Target, tool: str, parameters: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    """A tool call running in a thread; the list gets ``(seconds it took, events)``."""
    result: list[Any] = []

    def run() -> None:
        started = time.monotonic()
        events = call_tool(target, tool, parameters)
        result.append((time.monotonic() - started, events))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def connected(server: DaemonServer) -> list[dict[str, Any]]:
    body = server.client.get(f"/plugin/{TENANT}/debugging/plugins").json()
    assert body["code"] == 0, body
    return body["data"]


# --- appears, answers ------------------------------------------------------------------------------


def test_a_connected_plugin_is_installed_and_listed(server: DaemonServer, echo: SdkPlugin) -> None:
    entry = installations(server.client)[ECHO]
    assert entry["runtime_type"] == "remote" and entry["source"] == "remote"
    assert entry["plugin_unique_identifier"].startswith("tester/echo_tool:0.0.1@")
    declaration = entry["declaration"]
    assert declaration["category"] == "tool" and declaration["tool"]["identity"]["name"] == "echo_tool"
    tools = server.client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 10}).json()
    assert [tool["provider"] for tool in tools["data"]] == ["echo_tool"]
    icon = declaration["icon"]  # rewritten to a media id, served like an uploaded package's asset
    asset = server.client.get(f"/plugin/{TENANT}/asset/{icon}")
    assert asset.status_code == 200 and asset.content.startswith(b"<svg")
    assert installations(server.client, "another-tenant") == {}  # only the key's tenant has it


def test_storage_backwards_calls(server: DaemonServer, echo: SdkPlugin) -> None:
    target = Target(server.client, TENANT)
    assert items_of(call_tool(target, "storage", {"op": "set", "key": "color", "value": "blue"}))
    got = items_of(call_tool(target, "storage", {"op": "get", "key": "color"}))
    assert got[0]["message"]["json_object"] == {"value": "blue"}
    assert items_of(call_tool(target, "storage", {"op": "delete", "key": "color"}))
    missing = plugin_error(call_tool(target, "storage", {"op": "get", "key": "color"})[-1])
    assert "load data failed" in missing["message"]


def test_llm_backwards_call_through_the_inner_api(
    server: DaemonServer, echo: SdkPlugin, inner_api: DifyInnerAPI
) -> None:
    inner_api.reset()
    items = items_of(call_tool(Target(server.client, TENANT), "llm", {"provider": "p", "model": "m", "query": "q"}))
    assert "".join(item["message"]["text"] for item in items if item["type"] == "text") == inner_api.expected_llm_text()
    assert inner_api.calls("invoke/llm")[-1].json["tenant_id"] == TENANT


def test_a_model_plugin_streams_chunk_by_chunk(server: DaemonServer, home: Path) -> None:
    plugin = SdkPlugin("mock_llm", debug_port(server), debugging_key(server.client), home / "plugin-logs").start()
    try:
        wait_installed(server.client, "tester/mock_llm")
        with OpenAIServer(chunks=5, delay=0.2) as upstream:
            arrivals = stream_llm(Target(server.client, TENANT), upstream.url)
            assert_streamed_as_produced(arrivals, upstream.expected_content(), span=0.5)  # not buffered
    finally:
        plugin.kill()
    wait_uninstalled(server.client, "tester/mock_llm")


# --- logs and traces ----------------------------------------------------------------------------------


def test_logs_stream_live_to_a_watcher(server: DaemonServer, echo: SdkPlugin) -> None:
    marker = f"no_such_tool_{uuid.uuid4().hex[:8]}"
    lines: queue.Queue[str] = queue.Queue()

    def watch() -> None:
        headers = {"X-Api-Key": server.settings.SERVER_KEY}
        params = {"plugin_id": ECHO}
        with (
            httpx.Client(base_url=server.url, headers=headers) as client,
            client.stream("GET", f"/plugin/{TENANT}/debugging/logs", params=params, timeout=30) as response,
        ):
            for text in response.iter_lines():
                lines.put(text)
                if marker in text:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    history = []
    while (text := lines.get(timeout=10)) != ": live":
        history.append(text)
    assert any("connected from 127.0.0.1" in text for text in history)
    call_tool(Target(server.client, TENANT), marker)  # fails in the plugin: the daemon notes it
    deadline = time.monotonic() + 10
    while True:
        text = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if marker in text:
            entry = json.loads(text[len("data: ") :])
            break
    assert entry["level"] == "WARNING" and entry["plugin_id"] == ECHO and entry["source"] == "daemon"
    assert "(tool/invoke_tool) failed: ValueError" in entry["message"]
    watcher.join(timeout=10)
    snapshot = server.client.get(f"/plugin/{TENANT}/debugging/logs", params={"plugin_id": ECHO, "follow": "false"})
    assert marker in snapshot.text  # kept for later readers too


def test_each_session_is_traced(server: DaemonServer, echo: SdkPlugin) -> None:
    call_tool(Target(server.client, TENANT), "storage", {"op": "set", "key": "traced", "value": "v"})
    body = server.client.get(f"/plugin/{TENANT}/debugging/sessions", params={"plugin_id": ECHO, "limit": 1}).json()
    (trace,) = body["data"]
    assert trace["state"] == "ended"
    assert trace["request"]["type"] == "tool" and trace["request"]["action"] == "invoke_tool"
    assert trace["request"]["data"]["tool_parameters"] == {"op": "set", "key": "traced", "value": "v"}
    path = [(step["from"], step["kind"]) for step in trace["steps"]]
    assert path == [
        ("plugin", "invoke"),
        ("daemon", "backwards_response"),
        ("daemon", "backwards_response"),
        ("plugin", "stream"),
        ("plugin", "end"),
    ]
    assert trace["steps"][0]["data"]["type"] == "storage"
    assert [step["at"] for step in trace["steps"]] == sorted(step["at"] for step in trace["steps"])


# --- kill, restart, reconnect ---------------------------------------------------------------------------


def test_killed_plugin_fails_open_sessions_at_once_then_comes_back(server: DaemonServer, echo: SdkPlugin) -> None:
    target = Target(server.client, TENANT)
    thread, result = open_call(target, "sleep", {"seconds": 30})
    wait_for(lambda: connected(server) and connected(server)[0]["sessions"] == 1, 10, "the call to reach the plugin")
    connected_identifier = connected(server)[0]["plugin_unique_identifier"]
    killed_at = time.monotonic()
    echo.kill()
    thread.join(timeout=10)
    assert result, "the open call did not end after the plugin was killed"
    failed_after = time.monotonic() - killed_at
    error = plugin_error(result[0][1][-1])
    assert error == {"error_type": "ConnectionClosedError", "message": "Connection closed unexpectedly", "args": {}}
    assert failed_after < 2, f"the open session failed {failed_after:.2f} s after the kill"
    identifier = connected_identifier
    wait_uninstalled(server.client, ECHO, timeout=5)
    gone_after = time.monotonic() - killed_at
    known = server.client.get(
        f"/plugin/{TENANT}/management/fetch/identifier", params={"plugin_unique_identifier": identifier}
    )
    assert known.json()["data"] is False  # its declaration went with it
    gone = server.client.post(
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": ECHO},
        json={"user_id": "u", "data": {"provider": "echo_tool", "tool": "echo", "tool_parameters": {}}},
    )
    assert gone.status_code == 404

    restarted_at = time.monotonic()
    echo.start()  # the developer starts it again: hot reload
    wait_installed(server.client, ECHO)
    back_after = time.monotonic() - restarted_at
    assert items_of(call_tool(target, "echo", {"text": "back"}))[0]["message"] == {"text": "back"}
    (plugin,) = connected(server)
    assert plugin["registered_in_ms"] < 1000
    print(
        f"\nkill -> open session failed in {failed_after * 1000:.0f} ms, uninstalled in {gone_after * 1000:.0f} ms; "
        f"restart -> installed in {back_after:.2f} s (SDK start included), "
        f"connect -> installed in {plugin['registered_in_ms']:.0f} ms"
    )


def test_the_sdk_reconnects_by_itself_after_a_disconnect(server: DaemonServer, echo: SdkPlugin) -> None:
    """Removing the plugin in Dify drops its connection; the SDK re-sends its registration and is back."""
    (before,) = connected(server)
    installation = installations(server.client)[ECHO]
    removed = server.client.post(
        f"/plugin/{TENANT}/management/uninstall", json={"plugin_installation_id": installation["installation_id"]}
    )
    assert removed.json()["code"] == 0
    wait_for(lambda: not connected(server), 5, "the daemon to drop the connection")

    def reconnected() -> dict[str, Any] | None:
        plugins = connected(server)
        if plugins and plugins[0]["connected_at"] != before["connected_at"]:
            return plugins[0]
        return None

    after = wait_for(reconnected, 30, "the SDK to reconnect")  # it waits 5 s before trying
    assert after is not None
    assert after["plugin_unique_identifier"] == before["plugin_unique_identifier"]  # same plugin and tenant
    assert after["registered_in_ms"] < 1000
    print(f"\nSDK reconnect: connect -> installed in {after['registered_in_ms']:.0f} ms")
    assert wait_installed(server.client, ECHO)["plugin_unique_identifier"] == before["plugin_unique_identifier"]
    assert items_of(call_tool(Target(server.client, TENANT), "echo", {"text": "again"}))


def test_validate_credentials_answers(server: DaemonServer, echo: SdkPlugin) -> None:
    events = sse(
        server.client.post(
            f"/plugin/{TENANT}/dispatch/tool/validate_credentials",
            headers={"X-Plugin-ID": ECHO},
            json={"user_id": "u", "data": {"provider": "echo_tool", "credentials": {"api_key": "good"}}},
        )
    )
    assert items_of(events) == [{"result": True}]
