"""The local runtime behind the HTTP API, as Dify drives it: real SDK plugins in real processes.

Upload → install (task success) → dispatch → backwards calls → daemon restart, on one daemon per
module; the conformance suite runs on the same daemon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_daemon.packages import build_package

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
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.openai_server import OpenAIServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TENANT = "tenant-local"
INSTALL_DEADLINE = 600.0
SECRET_ENV = {"SERVER_KEY": TEST_KEY, "DB_PASSWORD": "db-secret", "DIFY_INNER_API_KEY": "inner-key"}


def install_task(server: DaemonServer, plugin: str, tenant: str = TENANT) -> tuple[str, dict[str, Any]]:
    """Upload ``tests/plugins/<plugin>`` and install it: its identifier and its finished install task."""
    identifier = envelope(upload(server.client, build_package(PLUGINS / plugin), tenant))["unique_identifier"]
    started = envelope(
        server.client.post(
            f"/plugin/{tenant}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        )
    )
    return identifier, wait_task(server.client, started["task_id"], tenant, timeout=INSTALL_DEADLINE)


def install(server: DaemonServer, plugin: str, tenant: str = TENANT) -> str:
    identifier, task = install_task(server, plugin, tenant)
    assert task["status"] == "success", task
    return identifier


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-http-home")


def local_settings(home: Path, inner_api: DifyInnerAPI, **overrides: Any):  # type: ignore[no-untyped-def]
    return make_settings(
        home,
        SERVER_KEY=TEST_KEY,
        PLATFORM="local",
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_INNER_API_KEY="inner-key",
        DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT=5000,
        **overrides,
    )


@pytest.fixture(scope="module")
def server(home: Path, inner_api: DifyInnerAPI) -> Iterator[DaemonServer]:
    saved = {name: os.environ.get(name) for name in SECRET_ENV}
    os.environ.update(SECRET_ENV)  # the daemon's own environment holds secrets; plugins must not see them
    try:
        with running_daemon(local_settings(home, inner_api)) as running:
            install(running, "echo_tool")
            yield running
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def conformance(server: DaemonServer) -> Target:
    return Target(server.client, TENANT)


def test_installed_plugin_is_listed_with_its_declaration(server: DaemonServer) -> None:
    listing = envelope(server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))
    assert listing["total"] == 1
    assert listing["list"][0]["runtime_type"] == "local"
    tools = envelope(server.client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 10}))
    assert tools[0]["provider"] == "echo_tool"


def test_plugin_sees_none_of_the_daemons_secrets(server: DaemonServer) -> None:
    environ = items_of(call_tool(Target(server.client, TENANT), "env"))[0]["message"]["json_object"]["environ"]
    assert environ["INSTALL_METHOD"] == "local"
    for name in SECRET_ENV:
        assert name not in environ
    assert not any("secret" in str(value) or TEST_KEY in str(value) for value in environ.values())


def test_storage_backwards_calls(server: DaemonServer) -> None:
    target = Target(server.client, TENANT)
    assert items_of(call_tool(target, "storage", {"op": "set", "key": "color", "value": "blue"}))
    assert items_of(call_tool(target, "storage", {"op": "get", "key": "color"}))[0]["message"]["json_object"] == {
        "value": "blue"
    }
    assert items_of(call_tool(target, "storage", {"op": "delete", "key": "color"}))
    exists = items_of(call_tool(target, "storage", {"op": "exist", "key": "color"}))
    assert exists[0]["message"]["json_object"] == {"exists": False}
    missing = plugin_error(call_tool(target, "storage", {"op": "get", "key": "color"})[-1])
    assert "load data failed" in missing["message"]
    too_big = plugin_error(call_tool(target, "storage", {"op": "set", "key": "big", "value": "x" * 1_100_000})[-1])
    assert "quota" in too_big["message"]


def test_llm_backwards_call_streams_the_answer(server: DaemonServer, inner_api: DifyInnerAPI) -> None:
    inner_api.reset()
    target = Target(server.client, TENANT)
    items = items_of(call_tool(target, "llm", {"provider": "openai", "model": "gpt", "query": "hi"}))
    text = "".join(item["message"]["text"] for item in items if item["type"] == "text")
    assert text == inner_api.expected_llm_text()
    sent = inner_api.calls("invoke/llm")[-1].json
    assert sent["tenant_id"] == TENANT and sent["user_id"] == "user-1"


def test_tool_backwards_call(server: DaemonServer, inner_api: DifyInnerAPI) -> None:
    inner_api.reset()
    target = Target(server.client, TENANT)
    items = items_of(
        call_tool(target, "call_tool", {"provider": "time", "tool_name": "current_time", "parameters": "{}"})
    )
    assert any(item.get("message", {}).get("text") == "tool says hi" for item in items), items


@pytest.mark.parametrize(("behaviour", "words"), [({"status": 500}, "500"), ({"garbage": True}, "magic")])
def test_inner_api_failures_reach_the_caller(server: DaemonServer, inner_api: DifyInnerAPI, behaviour, words) -> None:  # type: ignore[no-untyped-def]
    inner_api.reset()
    inner_api.behave("invoke/llm", **behaviour)
    target = Target(server.client, TENANT)
    try:
        error = plugin_error(call_tool(target, "llm", {"provider": "p", "model": "m", "query": "q"})[-1])
        assert words in error["message"]
    finally:
        inner_api.reset()
    assert items_of(call_tool(target, "echo", {"text": "healthy"}))[0]["message"] == {"text": "healthy"}


def test_permission_denied_without_manifest_grant(server: DaemonServer) -> None:
    install(server, "noperm_tool")
    target = Target(server.client, TENANT)
    storage = call_tool(
        target, "storage", {"op": "get", "key": "k"}, plugin_id="tester/noperm_tool", provider="noperm_tool"
    )
    error = plugin_error(storage[-1])
    assert "permission denied, you need to enable storage access in plugin manifest" in error["message"]
    llm = call_tool(
        target,
        "llm",
        {"provider": "p", "model": "m", "query": "q"},
        plugin_id="tester/noperm_tool",
        provider="noperm_tool",
    )
    assert "permission denied, you need to enable llm access" in plugin_error(llm[-1])["message"]


def test_stream_llm_from_a_model_plugin_chunk_by_chunk(server: DaemonServer) -> None:
    install(server, "mock_llm")
    with OpenAIServer(chunks=5, delay=0.2) as upstream:
        arrivals = stream_llm(Target(server.client, TENANT), upstream.url)
        assert_streamed_as_produced(arrivals, upstream.expected_content(), span=0.5)  # 5 chunks, 0.2 s apart

        validate = sse(
            server.client.post(
                f"/plugin/{TENANT}/dispatch/model/validate_provider_credentials",
                headers={"X-Plugin-ID": "tester/mock_llm"},
                json={"user_id": "u", "data": {"provider": "mock_llm", "credentials": {"endpoint_url": upstream.url}}},
            )
        )
        assert validate[0]["data"]["result"] is True


def test_install_of_a_plugin_that_cannot_start_fails_with_its_reason(server: DaemonServer) -> None:
    identifier, task = install_task(server, "broken_start")
    assert task["status"] == "failed"
    assert "cannot start: missing config" in task["plugins"][0]["message"]
    installed = envelope(server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 50}))
    assert identifier not in [entry["plugin_unique_identifier"] for entry in installed["list"]]


def test_install_of_a_plugin_that_prints_its_traceback_on_stdout_shows_it(server: DaemonServer) -> None:
    _, task = install_task(server, "stdout_traceback")
    assert task["status"] == "failed"
    message = task["plugins"][0]["message"]
    assert "Traceback (most recent call last):" in message
    assert "ModuleNotFoundError: No module named 'provider.sagemaker_helpers'" in message


def test_sdk_0_10_on_python_3_12_with_a_uv_lock(server: DaemonServer) -> None:
    install(server, "echo_tool_new")
    target = Target(server.client, TENANT)
    echoed = call_tool(target, "echo", {"text": "new sdk"}, plugin_id="tester/echo_tool_new", provider="echo_tool_new")
    assert items_of(echoed)[0]["message"] == {"text": "new sdk"}


def test_a_slow_dify_gives_the_plugin_an_error_not_a_hang(server: DaemonServer, inner_api: DifyInnerAPI) -> None:
    inner_api.reset()
    inner_api.behave("invoke/llm", stall=30)
    try:
        started = time.monotonic()
        events = call_tool(Target(server.client, TENANT), "llm", {"provider": "p", "model": "m", "query": "q"})
        assert "did not answer within 5 s" in plugin_error(events[-1])["message"]
        assert time.monotonic() - started < 20
    finally:
        inner_api.reset()


def test_a_caller_that_leaves_stops_the_plugins_calls_to_dify(
    server: DaemonServer, inner_api: DifyInnerAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dify stops reading (a user pressed stop): the LLM call under way is given up, the plugin gets
    an error at once instead of an answer nobody reads, and the session still drains to its end."""
    # this module's daemon gives a whole answer of Dify 5 s; here 60, so only the caller leaving ends it
    monkeypatch.setattr(server.daemon.backwards.dify, "read_deadline", 60.0)
    inner_api.reset()
    inner_api.behave("invoke/llm", chunks=60, delay=0.5)  # a slow answer: 30 s in all
    calls_before = len(inner_api.calls("invoke/llm"))
    try:
        started = time.monotonic()
        with server.client.stream(
            "POST",
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/echo_tool"},
            json={
                "user_id": "u",
                "data": {
                    "provider": "echo_tool",
                    "tool": "llm",
                    "tool_parameters": {"provider": "p", "model": "m", "query": "q"},
                    "credentials": {},
                },
            },
        ):
            wait_for(lambda: len(inner_api.calls("invoke/llm")) > calls_before, 30, "the plugin's call to Dify")
        # the caller has gone while Dify is still answering
        wait_for(lambda: len(server.daemon.sessions) == 0, 15, "the session to end")
        assert time.monotonic() - started < 25  # not the 30 s of Dify's whole answer
        assert len(inner_api.calls("invoke/llm")) == calls_before + 1
    finally:
        inner_api.reset()
