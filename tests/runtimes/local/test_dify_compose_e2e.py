"""Done-when of the drop-in issue: ``plugin-daemon serve`` as PID 1 of a fresh PID namespace, with
the environment Dify's compose file gives its plugin_daemon service (a changed SERVER_KEY, the
storage root in a temporary folder, the real PostgreSQL on 127.0.0.1), JSON logs.

It checks: unsupported Go settings are named once; with FORCE_VERIFYING_SIGNATURE=true the signed
Marketplace package installs and an unsigned one is refused, which installs once forcing is off; a
tool answers through dispatch and keeps data in plugin storage; after a restart everything is still
there (no environment rebuilt); every file the daemon wrote is under the storage root (LOG_FILE
aside, which names its own path); /metrics has Go's names with real counts; every log line is one
JSON object.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from plugin_daemon.packages import build_package

from tests.conformance.suite import Target, call_tool, items_of
from tests.core.packages.test_package_signature import MARKETPLACE_IDENTIFIER, MARKETPLACE_PACKAGE
from tests.core.test_management_api import envelope, error_of, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS
from tests.support.daemon_server import free_port
from tests.support.dify_compose import plugin_daemon_environment
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.namespaced_daemon import NamespacedDaemon, require_unshare

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TENANT = "3f2b8c1e-5d4a-4e6b-9c7d-2a1b0c9d8e7f"  # Dify's tenant ids are UUIDs (Go's schema keeps them so)
KEY = "an-operator-s-own-key-3c7f1e0a9b"


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def install_and_wait(client: httpx.Client, identifier: str) -> None:
    started = envelope(
        client.post(
            f"/plugin/{TENANT}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        )
    )
    task = wait_task(client, started["task_id"], TENANT, timeout=600)
    assert task["status"] == "success", task


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict) and {"ts", "severity", "message"} <= set(record), line
        records.append(record)
    return records


def test_the_daemon_drops_into_dify_s_compose(tmp_path: Path, postgres_url: str, inner_api: DifyInnerAPI) -> None:
    require_unshare()
    root = tmp_path / "storage"  # Dify mounts ./volumes/plugin_daemon here (/app/storage)
    scratch, cwd, capture = (tmp_path / name for name in ("tmp", "cwd", "capture"))
    for folder in (scratch, cwd, capture):
        folder.mkdir()
    log_file = tmp_path / "logs" / "server.log"  # Dify's LOG_FILE is /app/logs/server.log
    environ = plugin_daemon_environment(
        SERVER_KEY=KEY,  # step 2 of the guide: not the public default
        SERVER_PORT=str(free_port()),
        PLUGIN_STORAGE_LOCAL_ROOT=str(root),
        PLUGIN_WORKING_PATH=str(root / "cwd"),
        PLUGIN_REMOTE_INSTALLING_PORT=str(free_port()),
        DB_HOST="127.0.0.1",
        DB_DATABASE=urlsplit(postgres_url).path.lstrip("/"),
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_INNER_API_KEY="inner-key",
        LOG_OUTPUT_FORMAT="json",
        LOG_FILE=str(log_file),
        UV_CACHE_DIR=str(tmp_path / "uv-cache-of-the-environment"),
        TMPDIR=str(scratch),
    )

    def start(**changes: str) -> NamespacedDaemon:
        return NamespacedDaemon({**environ, **changes}, capture / "daemon.log", cwd).start()

    daemon = start()  # FORCE_VERIFYING_SIGNATURE=true, Dify's default
    try:
        with httpx.Client(base_url=daemon.url, headers={"X-Api-Key": KEY}, timeout=120) as client:
            signed = envelope(upload(client, MARKETPLACE_PACKAGE.read_bytes(), TENANT))
            assert (signed["unique_identifier"], signed["manifest"]["verified"]) == (MARKETPLACE_IDENTIFIER, True)
            install_and_wait(client, MARKETPLACE_IDENTIFIER)
            refused = error_of(upload(client, build_package(PLUGINS / "echo_tool"), TENANT))
            assert refused["message"].startswith("the package signature is required"), refused
    finally:
        daemon.stop()

    daemon = start(FORCE_VERIFYING_SIGNATURE="false")
    try:
        with httpx.Client(base_url=daemon.url, headers={"X-Api-Key": KEY}, timeout=120) as client:
            identifier = envelope(upload(client, build_package(PLUGINS / "echo_tool"), TENANT))["unique_identifier"]
            install_and_wait(client, identifier)
            target = Target(client, TENANT)
            for text in ("one", "two"):
                assert items_of(call_tool(target, "echo", {"text": text}))[0]["message"]["text"] == text
            assert items_of(call_tool(target, "storage", {"op": "set", "key": "kept", "value": "across restarts"}))
            # the debug runtime is part of serve: Dify's console gets a debugging key, the port listens
            key = envelope(client.post(f"/plugin/{TENANT}/debugging/key"))["key"]
            assert key and envelope(client.post(f"/plugin/{TENANT}/debugging/key"))["key"] == key
            socket.create_connection(("127.0.0.1", int(environ["PLUGIN_REMOTE_INSTALLING_PORT"])), timeout=5).close()
            scraped = httpx.get(f"{daemon.url}/metrics").text
    finally:
        daemon.stop()
    calls = 'plugin_id="tester/echo_tool",plugin_type="tool",runtime_type="local",operation="invoke_tool"'
    assert f'plugin_invocations_total{{{calls},status="success"}} 3' in scraped
    assert f"plugin_invocation_duration_seconds_count{{{calls}}} 3" in scraped
    assert (
        'plugin_http_requests_total{method="POST",endpoint="/plugin/:tenant_id/dispatch/tool/invoke",status="200"} 3'
        in (scraped)
    )
    assert 'plugin_installations_total{plugin_id="tester/echo_tool",status="success"} 1' in scraped

    daemon = start(FORCE_VERIFYING_SIGNATURE="false")
    try:
        with httpx.Client(base_url=daemon.url, headers={"X-Api-Key": KEY}, timeout=120) as client:
            listing = envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))
            installed = {item["plugin_unique_identifier"] for item in listing["list"]}
            assert installed == {identifier, MARKETPLACE_IDENTIFIER}
            target = Target(client, TENANT)
            assert items_of(call_tool(target, "echo", {"text": "three"}))[0]["message"]["text"] == "three"
            kept = items_of(call_tool(target, "storage", {"op": "get", "key": "kept"}))
            assert kept[0]["message"]["json_object"] == {"value": "across restarts"}
    finally:
        daemon.stop()

    records = json_lines(daemon.log())
    assert json_lines(log_file.read_text()) == records  # LOG_FILE gets the same lines
    messages = [record["message"] for record in records]
    assert sum("built the environment" in message for message in messages) == 2  # not rebuilt at restart
    redis = [m for m in messages if m.startswith("REDIS_HOST, REDIS_PASSWORD are set but not supported")]
    assert len(redis) == 3  # once per start
    assert any(record.get("plugin_id") == "tester/echo_tool" for record in records)

    written = files_under(tmp_path) - files_under(capture)
    outside = sorted(str(path) for path in written if not path.is_relative_to(root) and path != log_file)
    assert outside == [], outside
    assert files_under(scratch) == files_under(cwd) == set()  # its TMPDIR and working directory
    assert (root / "plugin_packages").is_dir() and (root / "cwd").is_dir()
    assert not os.path.exists(tmp_path / "uv-cache-of-the-environment")
