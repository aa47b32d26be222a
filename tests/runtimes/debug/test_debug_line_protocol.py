"""A line/1 plugin (Node.js, tests/plugins/line_echo_tool) on the debug runtime: it connects to the
debug port itself, the first line (``{"type": "auth", ...}``) chooses the protocol, and the same
conformance suite as the SDK's echo_tool runs against it."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from plugin_daemon.packages import build_package, decode_package

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import Target
from tests.runtimes.debug.debug_support import (
    TENANT,
    RawClient,
    debug_port,
    debug_settings,
    debugging_key,
    installations,
    wait_installed,
    wait_uninstalled,
)
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.plugin_driver import ENV_ALLOW_LIST, PLUGINS_DIR
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

ECHO = "tester/echo_tool"
FOLDER = PLUGINS_DIR / "line_echo_tool"


def declaration_document() -> dict[str, object]:
    """What the plugin registers with: its manifest, its provider (tools inlined) and its icon."""
    manifest = yaml.safe_load((FOLDER / "manifest.yaml").read_text())
    provider = decode_package(build_package(FOLDER)).declaration["tool"]
    provider["identity"]["icon"] = manifest["icon"]  # file names: the daemon remaps them
    icon = base64.b64encode((FOLDER / "_assets" / manifest["icon"]).read_bytes()).decode()
    return {"manifest": manifest, "declarations": {"tool": [provider]}, "assets": {manifest["icon"]: icon}}


class NodePlugin:
    def __init__(self, port: int, key: str, folder: Path) -> None:
        self.port = port
        self.key = key
        self.declaration_file = folder / "declaration.json"
        self.declaration_file.write_bytes(orjson.dumps(declaration_document()))
        self.log = folder / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW_LIST}
        env.update(
            REMOTE_INSTALL_URL=f"127.0.0.1:{self.port}",
            REMOTE_INSTALL_KEY=self.key,
            LINE_DECLARATION_FILE=str(self.declaration_file),
        )
        with open(self.log, "ab") as output:
            self.proc = subprocess.Popen(
                ["node", "main.js"],
                cwd=FOLDER,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, inner_api: DifyInnerAPI) -> Iterator[DaemonServer]:
    settings = debug_settings(
        tmp_path_factory.mktemp("debug-line-home"),
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT=5000,
        PLUGIN_LINE_HEARTBEAT_INTERVAL=1.0,
        PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT=5.0,
    )
    with running_daemon(settings) as running:
        yield running


@pytest.fixture(scope="module")
def node_process(server: DaemonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodePlugin]:
    plugin = NodePlugin(debug_port(server), debugging_key(server.client), tmp_path_factory.mktemp("node"))
    try:
        yield plugin
    finally:
        plugin.kill()


@pytest.fixture
def conformance(server: DaemonServer, node_process: NodePlugin) -> Target:
    """The Node plugin connected and installed (started again after a test crashed it).

    A plugin a test crashed may still be exiting: what the daemon lists as connected decides."""
    listed = server.client.get(f"/plugin/{TENANT}/debugging/plugins").json()["data"]
    if not node_process.alive or not any(plugin["plugin_id"] == ECHO and plugin["alive"] for plugin in listed):
        node_process.kill()
        if node_process.proc is not None:
            wait_uninstalled(server.client, ECHO)  # the crashed one's connection is gone
        node_process.start()
    wait_installed(server.client, ECHO)
    return Target(server.client, TENANT, recovers_after_crash=False)


def test_registered_as_a_debugging_plugin_and_kept_alive_by_heartbeats(
    server: DaemonServer, conformance: Target
) -> None:
    installed = installations(server.client)[ECHO]
    assert installed["runtime_type"] == "remote"
    assert installed["declaration"]["meta"]["runner"]["protocol"] == "line/1"
    runtime = server.daemon.control_panel.runtimes["remote"]
    [connection] = [c for conns in runtime._by_plugin.values() for c in conns]
    beats = connection.heartbeats
    # the daemon asks every 1 s (PLUGIN_LINE_HEARTBEAT_INTERVAL) and each heartbeat_ack counts
    wait_for(lambda: connection.heartbeats >= beats + 3, 8, "three more heartbeat_acks")
    assert connection.alive


def test_a_bad_key_gets_auth_failed(server: DaemonServer) -> None:
    with RawClient(debug_port(server)) as client:
        client.send(orjson.dumps({"type": "auth", "api_key": "wrong", "plugin_id": "tester/echo_tool"}) + b"\n")
        answer = orjson.loads(client.read_until_closed().strip())
    assert answer["type"] == "auth_failed" and answer["message"]


def test_the_first_line_keeps_the_pre_key_size_limit(server: DaemonServer) -> None:
    limit = server.settings.PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_MAX_SIZE
    with RawClient(debug_port(server)) as client:
        client.send(orjson.dumps({"type": "auth", "api_key": "k" * (limit + 10), "plugin_id": "a/b"}) + b"\n")
        answer = client.read_until_closed()
    assert b"longer than" in answer or b"handshake failed" in answer
