"""Dispatch and sessions in the core, over real HTTP, with scripted in-memory plugins."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from plugin_daemon.hookspecs import hookimpl
from plugin_daemon.packages import build_package
from plugin_daemon.plugins import load_extensions
from plugin_daemon.runtime import EventKind, InstanceState, SessionEvent
from plugin_daemon.runtime_memory import MemoryRuntime

from tests.core.test_management_api import TENANT, envelope, install, sse_items, upload
from tests.support.daemon_server import running_daemon
from tests.support.waiting import wait_for

ECHO_TOOL = Path(__file__).parents[1] / "plugins" / "echo_tool"
release = threading.Event()


async def failing(data: dict[str, Any]) -> AsyncIterator[Any]:
    yield {"type": "text", "message": {"text": "before"}, "meta": None}
    yield SessionEvent(EventKind.ERROR, {"error_type": "InvokeRateLimitError", "message": "slow down", "args": {}})


async def slow(data: dict[str, Any]) -> AsyncIterator[Any]:
    yield {"type": "text", "message": {"text": "started"}, "meta": None}
    await anyio.sleep(30)
    yield {"type": "text", "message": {"text": "never"}, "meta": None}


async def held(data: dict[str, Any]) -> AsyncIterator[Any]:
    yield {"type": "text", "message": {"text": "first"}, "meta": None}
    await anyio.to_thread.run_sync(release.wait, 20)
    yield {"type": "text", "message": {"text": "second"}, "meta": None}


async def blobs(data: dict[str, Any]) -> AsyncIterator[Any]:
    payload = b"x" * 20000
    pieces = [payload[i : i + 8192] for i in range(0, len(payload), 8192)]
    for index, piece in enumerate(pieces):
        message = {
            "id": "b1",
            "sequence": index,
            "total_length": len(payload),
            "blob": base64.b64encode(piece).decode(),
            "end": False,
        }
        yield {"type": "blob_chunk", "message": message, "meta": {"mime_type": "text/plain"}}
    end = {"id": "b1", "sequence": len(pieces), "total_length": len(payload), "blob": "", "end": True}
    yield {"type": "blob_chunk", "message": end, "meta": {"mime_type": "text/plain"}}


SCRIPTS = {
    "fail": failing,
    "slow": slow,
    "held": held,
}


async def tool_router(data: dict[str, Any]) -> AsyncIterator[Any]:
    async for item in SCRIPTS[data["tool"]](data):
        yield item


def scripted_extensions() -> Any:
    module = types.ModuleType("scripted")

    @hookimpl
    def plugin_daemon_register_runtimes(register):  # type: ignore[no-untyped-def]
        register(
            "scripted",
            lambda daemon: MemoryRuntime(
                {("tool", "invoke_tool"): tool_router, ("agent_strategy", "invoke_agent_strategy"): blobs}
            ),
        )

    module.plugin_daemon_register_runtimes = plugin_daemon_register_runtimes  # type: ignore[attr-defined]
    manager = load_extensions()
    manager.register(module, "scripted")
    return manager


@pytest.fixture
def server(make_settings):  # type: ignore[no-untyped-def]
    settings = make_settings(PLATFORM="scripted", PLUGIN_MAX_EXECUTION_TIMEOUT=1)
    with running_daemon(settings, scripted_extensions()) as running:
        identifier = envelope(upload(running.client, build_package(ECHO_TOOL)))["unique_identifier"]
        assert install(running.client, identifier)["status"] == "success"
        yield running


def call(client: httpx.Client, tool: str) -> httpx.Response:
    return client.post(
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": "tester/echo_tool"},
        json={"user_id": "u1", "data": {"provider": "echo_tool", "tool": tool}},
    )


@contextlib.contextmanager
def held_call(client: httpx.Client) -> Iterator[Iterator[str]]:
    """A call of the ``held`` tool, its first item read; yields the lines still to come."""
    release.clear()
    with client.stream(
        "POST",
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": "tester/echo_tool"},
        json={"user_id": "u1", "data": {"provider": "echo_tool", "tool": "held"}},
    ) as response:
        lines = (line for line in response.iter_lines() if line)
        assert json.loads(next(lines)[len("data: ") :])["data"]["message"] == {"text": "first"}
        yield lines


def test_plugin_error_is_the_envelope_dify_parses_twice(server) -> None:  # type: ignore[no-untyped-def]
    items = sse_items(call(server.client, "fail"))
    assert items[0]["data"]["message"] == {"text": "before"}
    error = items[1]
    assert error["code"] == -500 and error["data"] is None
    outer = json.loads(error["message"])
    assert outer["error_type"] == "PluginInvokeError"
    inner = json.loads(outer["message"])
    assert inner == {"args": {}, "error_type": "InvokeRateLimitError", "message": "slow down"}
    assert len(server.daemon.sessions) == 0


def test_execution_timeout_ends_the_session_with_the_go_message(server) -> None:  # type: ignore[no-untyped-def]
    items = sse_items(call(server.client, "slow"))
    assert items[0]["data"]["message"] == {"text": "started"}
    assert json.loads(items[-1]["message"])["message"] == "killed by timeout"
    assert len(server.daemon.sessions) == 0


def test_caller_leaving_does_not_end_the_session(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(PLATFORM="scripted")
    with running_daemon(settings, scripted_extensions()) as running:
        identifier = envelope(upload(running.client, build_package(ECHO_TOOL)))["unique_identifier"]
        install(running.client, identifier)
        with held_call(running.client):
            pass
        # the caller has gone; the session is still the daemon's until the plugin ends it
        sessions = running.daemon.sessions.list()
        assert [s.state for s in sessions] == ["running"]
        release.set()
        wait_for(lambda: len(running.daemon.sessions) == 0, 10, "the session to end")


def test_uninstall_lets_calls_in_flight_finish_then_stops_the_plugin(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(PLATFORM="scripted")
    with running_daemon(settings, scripted_extensions()) as running:
        identifier = envelope(upload(running.client, build_package(ECHO_TOOL)))["unique_identifier"]
        installation = install(running.client, identifier)
        assert installation["status"] == "success"
        runtime = running.daemon.control_panel.runtime("scripted")
        listing = envelope(running.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 5}))
        with held_call(running.client) as lines:
            removed = running.client.post(
                f"/plugin/{TENANT}/management/uninstall",
                json={"plugin_installation_id": listing["list"][0]["installation_id"]},
            )
            assert envelope(removed) is True  # at once, without waiting for the call
            assert call(running.client, "held").status_code == 404  # new callers: not installed
            assert runtime.state(identifier).value == "ready"  # the call in flight keeps its plugin
            release.set()
            assert json.loads(next(lines)[len("data: ") :])["data"]["message"] == {"text": "second"}
        wait_for(lambda: runtime.state(identifier).value == "absent", 10, "the plugin to be stopped")


def test_agent_strategy_blob_chunks_are_merged(server) -> None:  # type: ignore[no-untyped-def]
    response = server.client.post(
        f"/plugin/{TENANT}/dispatch/agent_strategy/invoke",
        headers={"X-Plugin-ID": "tester/echo_tool"},
        json={"user_id": "u1", "data": {"agent_strategy_provider": "a", "agent_strategy": "b"}},
    )
    items = sse_items(response)
    assert len(items) == 1
    blob = items[0]["data"]
    assert blob["type"] == "blob"
    assert base64.b64decode(blob["message"]["blob"]) == b"x" * 20000
    assert blob["meta"] == {"mime_type": "text/plain"}


def test_errors_say_whether_a_plugin_is_missing_installing_or_failed(make_settings) -> None:  # type: ignore[no-untyped-def]
    with running_daemon(make_settings(PLATFORM="scripted"), scripted_extensions()) as running:
        client = running.client
        runtime = running.daemon.control_panel.runtime("scripted")
        missing = call(client, "fail")
        assert missing.status_code == 404
        assert "is not installed" in json.loads(missing.json()["message"])["message"]

        identifier = envelope(upload(client, build_package(ECHO_TOOL)))["unique_identifier"]
        runtime.holds[identifier] = threading.Event()
        started = envelope(
            client.post(
                f"/plugin/{TENANT}/management/install/identifiers",
                json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
            )
        )
        wait_for(lambda: running.daemon.installer.installing, 10, "the install to start")
        installing = call(client, "fail")
        assert installing.status_code == 404
        error = json.loads(installing.json()["message"])
        assert "still being installed" in error["message"] and started["task_id"] in error["message"]
        assert error["args"] == {"reason": "installing", "task_id": started["task_id"]}
        runtime.holds[identifier].set()
        wait_for(lambda: not running.daemon.installer.installing, 10, "the install to end")

        runtime.states[identifier] = InstanceState.FAILED
        runtime.failing[identifier] = "it exited with code 3"
        failed = sse_items(call(client, "fail"))
        message = json.loads(failed[0]["message"])
        assert message["error_type"] == "PluginDaemonInternalServerError"
        assert "(failed): it exited with code 3" in message["message"]
        assert "failed to start" in message["message"]


def test_a_call_cancelled_by_the_servers_own_deadline_ends_with_an_error_event(make_settings) -> None:  # type: ignore[no-untyped-def]
    """uvicorn cancels what is left when its shutdown deadline passes: the answer cut there gets an
    error event before its end (it used to end like a complete one)."""
    settings = make_settings(PLATFORM="scripted", PLUGIN_MAX_EXECUTION_TIMEOUT=60)
    with running_daemon(settings, scripted_extensions()) as server:
        identifier = envelope(upload(server.client, build_package(ECHO_TOOL)))["unique_identifier"]
        assert install(server.client, identifier)["status"] == "success"
        try:
            with held_call(server.client) as lines:
                server.server.config.timeout_graceful_shutdown = 1  # type: ignore[assignment]
                server.server.should_exit = True
                rest = [json.loads(line[len("data: ") :]) for line in lines]
        finally:
            release.set()
    assert len(rest) == 1, rest
    assert rest[0]["code"] == -500 and "stopped before it ended" in json.loads(rest[0]["message"])["message"]


def test_a_call_still_being_read_at_the_servers_deadline_gets_the_shutdown_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    """Cancelled before the plugin was called (its body still arriving): Dify's envelope, not a plain 500."""
    with running_daemon(make_settings(PLATFORM="scripted"), scripted_extensions()) as server:
        identifier = envelope(upload(server.client, build_package(ECHO_TOOL)))["unique_identifier"]
        assert install(server.client, identifier)["status"] == "success"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"POST /plugin/{TENANT}/dispatch/tool/invoke HTTP/1.1\r\nHost: x\r\n"
                f"X-Api-Key: {server.settings.SERVER_KEY}\r\nX-Plugin-ID: tester/echo_tool\r\n"
                'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"data":'.encode()
            )
            wait_for(lambda: server.server.server_state.tasks, 10, "the request to reach the daemon")
            server.server.config.timeout_graceful_shutdown = 1  # type: ignore[assignment]
            server.server.should_exit = True
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, answer
    assert b"daemon shutting down" in body, answer
