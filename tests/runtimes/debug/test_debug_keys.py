"""Debugging keys over HTTP, what survives a daemon restart, and the listener's switches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
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
from tests.support.daemon_server import free_port, running_daemon

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
        assert health["status"] == "ok"  # switched off is not broken


def test_a_busy_port_stops_the_start_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SERVER_", "PLUGIN_", "DB_", "LOG_"))}
        environ |= {"SERVER_KEY": "a-private-key-0123456789", "SERVER_PORT": str(free_port())}
        environ |= {"PLUGIN_REMOTE_INSTALLING_PORT": str(port)}
        result = subprocess.run(
            [sys.executable, "-m", "plugin_daemon.cli", "serve"],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"the debug listener cannot listen on 127.0.0.1:{port}: Address already in use" in output
    assert "PLUGIN_REMOTE_INSTALLING_PORT" in output
    assert "Traceback" not in output, output


def test_health_details_need_the_key(tmp_path: Path) -> None:
    with running_daemon(debug_settings(tmp_path)) as server:
        anonymous = httpx.get(f"{server.url}/health/check").json()
        assert anonymous == {
            "status": "ok",
            "version": anonymous["version"],
            "platform": "remote",
            "active_requests": 0,
            "active_dispatch_requests": 0,
        }
        with_key = server.client.get("/health/check").json()["runtimes"]["remote"]
        assert with_key["listening"] == f"127.0.0.1:{debug_port(server)}"
        wrong_key = httpx.get(f"{server.url}/health/check", headers={"X-Api-Key": "nope"}).json()
        assert "runtimes" not in wrong_key
