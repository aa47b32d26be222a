"""Debugging keys over HTTP, what survives a daemon restart, and the listener's switches."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from plugin_daemon.daemon import Daemon

from tests.runtimes.debug.debug_support import (
    RawClient,
    debug_port,
    debug_runtime,
    debug_settings,
    debugging_key,
    installations,
    registration_frames,
    wait_installed,
)
from tests.support.daemon_server import running_daemon

pytestmark = pytest.mark.slow


def test_one_key_per_tenant_kept_across_restarts(tmp_path: Path) -> None:
    settings = debug_settings(tmp_path)
    with running_daemon(settings) as server:
        key = debugging_key(server.client, "tenant-a")
        assert debugging_key(server.client, "tenant-a") == key  # the same key while it lives
        other = debugging_key(server.client, "tenant-b")
        assert other != key
        unauthorized = server.client.post("/plugin/tenant-a/debugging/key", headers={"X-Api-Key": "wrong"})
        assert unauthorized.status_code == 401
    with running_daemon(settings) as server:
        assert debugging_key(server.client, "tenant-a") == key
        with RawClient(debug_port(server)) as peer:  # and it still lets a plugin in, for its tenant only
            peer.send(registration_frames(key))
            wait_installed(server.client, "tester/echo_tool", "tenant-a", timeout=10)
            assert installations(server.client, "tenant-b") == {}


def test_debugging_installations_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    settings = debug_settings(tmp_path)
    daemon = Daemon(settings)  # as if a daemon had died with a plugin connected: rows, no connection
    manager = daemon.manager
    identifier = "tester/echo_tool:0.0.1@" + "ab" * 32
    manager.register_declaration(identifier, {"name": "echo_tool", "tool": {"identity": {"name": "echo_tool"}}})
    manager.install("tenant-a", identifier, runtime_type="remote", source="remote")
    daemon.database.dispose()
    with running_daemon(settings) as server:
        assert installations(server.client, "tenant-a") == {}
        known = server.client.get(
            "/plugin/tenant-a/management/fetch/identifier", params={"plugin_unique_identifier": identifier}
        )
        assert known.json()["data"] is False  # nor is its declaration kept


def test_the_listener_can_be_switched_off(tmp_path: Path) -> None:
    with running_daemon(debug_settings(tmp_path, PLUGIN_REMOTE_INSTALLING_ENABLED=False)) as server:
        assert debug_runtime(server).address is None
        assert debugging_key(server.client)  # keys can still be issued
        health = server.client.get("/health/check").json()
        assert health["runtimes"]["remote"]["listening"] is None


def test_a_busy_port_leaves_the_daemon_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running_daemon(debug_settings(tmp_path, PLUGIN_REMOTE_INSTALLING_PORT=port)) as server:
            health = server.client.get("/health/check").json()["runtimes"]["remote"]
            assert health["listening"] is None
            assert f"cannot listen on 127.0.0.1:{port}" in health["error"]
            assert (
                server.client.get("/plugin/t/management/list", params={"page": 1, "page_size": 1}).json()["code"] == 0
            )
