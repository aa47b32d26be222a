"""What the debug listener refuses, and how: one plain-text line, then the connection closed,
while a good plugin (real SDK, connected first) keeps answering.

Hand-written peers connect from distinct loopback addresses (127.0.0.x) so that the per-address
rate limit of invalid keys is tested on its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from plugin_daemon.packages import build_package

from tests.conformance.suite import Target, call_tool, items_of, plugin_error
from tests.runtimes.debug.debug_support import (
    TENANT,
    RawClient,
    SdkPlugin,
    debug_port,
    debug_runtime,
    debug_settings,
    debugging_key,
    installations,
    registration_frames,
    wait_installed,
    wait_uninstalled,
)
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.plugin_driver import PLUGINS_DIR
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

HANDSHAKE_TIMEOUT = 2.0
HEARTBEAT_TIMEOUT = 3.0
SILENT_DROP_TIMEOUT = 4.0
MAX_FAILED_KEYS = 3
TENANT_CAP = 2
LIMIT = 5 * 1024 * 1024
HANDSHAKE_LINE_LIMIT = 4096


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("debug-refusals-home")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[DaemonServer]:
    settings = debug_settings(
        home,
        PLUGIN_REMOTE_INSTALLING_HANDSHAKE_TIMEOUT=HANDSHAKE_TIMEOUT,
        PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT,
        PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT=SILENT_DROP_TIMEOUT,
        PLUGIN_REMOTE_INSTALLING_MAX_FAILED_KEYS=MAX_FAILED_KEYS,
        PLUGIN_REMOTE_INSTALLING_FAILED_KEYS_WINDOW=600,
        PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN=TENANT_CAP,
    )
    with running_daemon(settings) as running:
        yield running


@pytest.fixture(scope="module")
def good(server: DaemonServer, home: Path) -> Iterator[dict[str, Any]]:
    """echo_tool over the SDK for TENANT; yields its connection as the plugins route shows it."""
    plugin = SdkPlugin(
        "echo_tool", debug_port(server), debugging_key(server.client), home / "logs", env={"HEARTBEAT_INTERVAL": "0.5"}
    ).start()
    try:
        wait_installed(server.client, "tester/echo_tool")
        (connection,) = server.client.get(f"/plugin/{TENANT}/debugging/plugins").json()["data"]
        yield connection
    finally:
        plugin.kill()


def still_good(server: DaemonServer, good: dict[str, Any]) -> None:
    """The good plugin answers on the very connection it had."""
    assert items_of(call_tool(Target(server.client, TENANT), "echo", {"text": "fine"}))[0]["message"] == {
        "text": "fine"
    }
    (connection,) = server.client.get(f"/plugin/{TENANT}/debugging/plugins").json()["data"]
    assert connection["connected_at"] == good["connected_at"]


def refusal(port: int, data: bytes, source: str = "127.0.0.2", timeout: float = 10.0) -> bytes:
    with RawClient(port, source=source) as client:
        if data:
            client.send(data)
        return client.read_until_closed(timeout)


# --- one line, then closed ---------------------------------------------------------------------


def test_wrong_key(server: DaemonServer, good: dict[str, Any]) -> None:
    port = debug_port(server)
    assert refusal(port, registration_frames("not-a-key")) == b"handshake failed, invalid key\n"
    still_good(server, good)


def test_slow_handshake(server: DaemonServer, good: dict[str, Any]) -> None:
    port = debug_port(server)
    started = time.monotonic()
    key = debugging_key(server.client, "tenant-slow")
    half = registration_frames(key)[:300]  # the key and the start of the manifest, then nothing
    assert refusal(port, half) == b"handshake failed, registration not finished within 2 s\n"
    assert HANDSHAKE_TIMEOUT - 0.5 < time.monotonic() - started < HANDSHAKE_TIMEOUT + 3
    assert refusal(port, b"") == b"handshake failed, no handshake within 2 s\n"  # silent peer
    assert installations(server.client, "tenant-slow") == {}
    still_good(server, good)


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\xff\xfe garbage \x80\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b'{"type": 1}\n', b"[]\n"],
)
def test_garbage_bytes(server: DaemonServer, good: dict[str, Any], garbage: bytes) -> None:
    assert refusal(debug_port(server), garbage) == b"handshake failed, invalid handshake message\n"
    still_good(server, good)


def test_an_oversize_line_is_refused_as_soon_as_it_passes_the_limit(server: DaemonServer, good: dict[str, Any]) -> None:
    port = debug_port(server)
    # before the key: the handshake line may be a few kilobytes
    answer = refusal(port, b"x" * (64 * 1024))  # no newline at all
    assert answer == f"handshake failed, a registration line is longer than {HANDSHAKE_LINE_LIMIT} bytes\n".encode()
    # after it: any line of the registration up to PLUGIN_RUNTIME_MAX_BUFFER_SIZE
    handshake = orjson.dumps({"type": "handshake", "data": {"key": debugging_key(server.client, "tenant-long")}})
    answer = refusal(port, handshake + b"\n" + b"x" * (LIMIT + 1024 * 1024))
    assert answer == f"handshake failed, a registration line is longer than {LIMIT} bytes\n".encode()
    still_good(server, good)


def test_300_silent_connections_from_one_address(server: DaemonServer, good: dict[str, Any]) -> None:
    """An address keeps 4 connections waiting for their handshake: each one more closes its oldest."""
    port = debug_port(server)
    runtime = debug_runtime(server)
    clients = [RawClient(port, source="127.0.0.4") for _ in range(300)]
    try:
        still_good(server, good)
        answers = [client.read_until_closed(HANDSHAKE_TIMEOUT + 8) for client in clients]
    finally:
        for client in clients:
            client.close()
    crowded = b"handshake failed, too many connections from 127.0.0.4 are waiting for their handshake\n"
    assert answers.count(crowded) == 296
    assert answers.count(b"handshake failed, no handshake within 2 s\n") == 4
    wait_for(lambda: runtime.listener.open_connections == 1, 10, "the refused connections to be gone")
    still_good(server, good)


def test_a_full_listener_closes_the_longest_waiting_stranger_for_a_newcomer(
    server: DaemonServer, good: dict[str, Any]
) -> None:
    """256 silent connections from 64 addresses fill the listener; a developer still registers."""
    port = debug_port(server)
    runtime = debug_runtime(server)
    silent = [RawClient(port, source=f"127.0.1.{number // 4 + 1}") for number in range(256)]
    try:
        wait_for(lambda: runtime.listener.open_connections >= 256, 10, "a full listener")
        key = debugging_key(server.client, "tenant-crowd")
        with RawClient(port, source="127.0.0.8") as developer:
            developer.send(registration_frames(key))
            wait_installed(server.client, "tester/echo_tool", "tenant-crowd", timeout=10)
        wait_uninstalled(server.client, "tester/echo_tool", "tenant-crowd")
        crowded = b"handshake failed, the server is full and this connection waited longest for its handshake\n"
        assert silent[0].read_until_closed(5) == crowded
    finally:
        for client in silent:
            client.close()
    wait_for(lambda: runtime.listener.open_connections == 1, HANDSHAKE_TIMEOUT + 8, "the silent connections gone")
    still_good(server, good)


def test_invalid_keys_are_rate_limited_per_address_but_a_valid_key_always_passes(
    server: DaemonServer, good: dict[str, Any]
) -> None:
    port = debug_port(server)
    for _ in range(MAX_FAILED_KEYS):
        assert refusal(port, registration_frames("guess"), source="127.0.0.3") == b"handshake failed, invalid key\n"
    blocked = refusal(port, registration_frames("guess"), source="127.0.0.3")
    assert blocked.startswith(b"handshake failed, too many invalid keys from 127.0.0.3; try again in ")
    key = debugging_key(server.client, "tenant-limited")
    # a developer on the same host as the guesser is never locked out
    with RawClient(port, source="127.0.0.3") as developer:
        developer.send(registration_frames(key))
        wait_installed(server.client, "tester/echo_tool", "tenant-limited", timeout=10)
    wait_uninstalled(server.client, "tester/echo_tool", "tenant-limited")
    still_good(server, good)


@pytest.mark.parametrize("frame", ["manifest_declaration", "tool_declaration"])
def test_a_declaration_nested_too_deep_is_refused_with_a_reason(
    server: DaemonServer, good: dict[str, Any], frame: str
) -> None:
    key = debugging_key(server.client, "tenant-deep")
    nested = b"[" * 1000 + b'"bottom"' + b"]" * 1000  # written out: orjson writes no more than 254 levels
    data = b'{"name":"deep","extra":%s}' % nested if frame == "manifest_declaration" else b'[{"extra":%s}]' % nested
    frames = orjson.dumps({"type": "handshake", "data": {"key": key}}) + b"\n"
    frames += b'{"type":"%s","data":%s}\n\n' % (frame.encode(), data)
    answer = refusal(debug_port(server), frames)
    assert answer == f"register failed, invalid manifest detected: {frame} nests more than 200 levels deep\n".encode()
    still_good(server, good)


# --- registered, then refused or dropped ---------------------------------------------------------------


def test_per_tenant_connection_cap(server: DaemonServer, good: dict[str, Any]) -> None:
    port = debug_port(server)
    key = debugging_key(server.client, "tenant-cap")
    first, second = RawClient(port, source="127.0.0.6"), RawClient(port, source="127.0.0.6")
    try:
        for client in (first, second):
            client.send(registration_frames(key))
        wait_for(lambda: len(debug_runtime(server).connections("tenant-cap")) == TENANT_CAP, 10, "two connections")
        third = refusal(port, registration_frames(key), source="127.0.0.6")
        assert third.startswith(b"too many debugging connections for this workspace (at most 2")
        first.close()
        wait_for(lambda: len(debug_runtime(server).connections("tenant-cap")) == 1, 10, "one connection")
        assert installations(server.client, "tenant-cap")  # the other copy still serves it
    finally:
        first.close()
        second.close()
    wait_uninstalled(server.client, "tester/echo_tool", "tenant-cap")

    def logged() -> list[str] | None:
        body = server.client.get(
            "/plugin/tenant-cap/debugging/logs", params={"plugin_id": "tester/echo_tool", "follow": "false"}
        )
        lines = [line for line in body.text.split("\n") if line.startswith("data: ")]
        messages = [json.loads(line[len("data: ") :])["message"] for line in lines]
        # each "disconnected" is noted once its connection is cleaned up, just after the uninstall
        return messages if sum(message.startswith("disconnected:") for message in messages) == 2 else None

    wait_for(logged, 10, "both disconnections in the log book")  # the third was refused before it named its plugin
    still_good(server, good)


def test_a_plugin_installed_another_way_is_not_replaced(server: DaemonServer, good: dict[str, Any]) -> None:
    manager = server.daemon.manager
    identifier = manager.upload(build_package(PLUGINS_DIR / "echo_tool"), verify_signature=False)["unique_identifier"]
    manager.install("tenant-memory", identifier, runtime_type="memory", source="package")
    key = debugging_key(server.client, "tenant-memory")
    answer = refusal(debug_port(server), registration_frames(key))
    assert answer.startswith(b"register failed, plugin tester/echo_tool is already installed in this workspace")
    assert b"(runtime memory)" in answer
    assert installations(server.client, "tenant-memory")["tester/echo_tool"]["runtime_type"] == "memory"
    still_good(server, good)


def test_a_plugin_silent_past_the_drop_timeout_is_dropped_and_its_sessions_fail(
    server: DaemonServer, good: dict[str, Any]
) -> None:
    port = debug_port(server)
    key = debugging_key(server.client, "tenant-silent")
    target = Target(server.client, "tenant-silent")
    with RawClient(port, source="127.0.0.7") as peer:
        peer.send(registration_frames(key))
        wait_installed(server.client, "tester/echo_tool", "tenant-silent", timeout=10)
        result: list[Any] = []
        caller = threading.Thread(target=lambda: result.append(call_tool(target, "echo", {"text": "hello?"})))
        caller.start()
        request = orjson.loads(peer.read_line())  # exactly the local runtime's request line (protocol.md §1.3)
        assert list(request) == [
            "session_id",
            "conversation_id",
            "message_id",
            "app_id",
            "endpoint_id",
            "context",
            "event",
            "data",
        ]
        assert request["event"] == "request" and request["data"]["tool_parameters"] == {"text": "hello?"}
        peer.read_until_closed(SILENT_DROP_TIMEOUT + 5)  # we answer nothing, send no heartbeat
        caller.join(timeout=5)
    error = plugin_error(result[0][-1])
    assert error["error_type"] == "ConnectionClosedError"
    assert error["message"].startswith("Connection closed unexpectedly: the plugin sent no heartbeat for")
    assert "PLUGIN_REMOTE_INSTALLING_SILENT_DROP_TIMEOUT 4 s" in error["message"]
    wait_uninstalled(server.client, "tester/echo_tool", "tenant-silent")
    still_good(server, good)
