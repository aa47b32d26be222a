"""A line/1 plugin (Node.js, tests/plugins/line_echo_tool) on the local runtime, as Dify drives it.

The same conformance suite as the SDK's echo_tool runs against it: its package is a normal
.difypkg whose manifest names ``meta.runner.protocol: line/1``; the daemon runs ``node main.js``
in the plugin's folder (no Python environment) and translates between line/1 and the daemon's
session events.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import Target, call_tool, items_of
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope
from tests.runtimes.local.local_runtime_support import make_settings
from tests.runtimes.local.test_local_http import install
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

TENANT = "tenant-line"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, inner_api: DifyInnerAPI) -> Iterator[DaemonServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("line-home"),
        SERVER_KEY=TEST_KEY,
        PLATFORM="local",
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_INNER_API_KEY="inner-key",
        PLUGIN_LINE_HEARTBEAT_INTERVAL=1.0,
    )
    with running_daemon(settings) as running:
        install(running, "line_echo_tool", TENANT)
        yield running


@pytest.fixture(scope="module")
def conformance(server: DaemonServer) -> Target:
    return Target(server.client, TENANT)


def test_listed_like_any_plugin(server: DaemonServer) -> None:
    listing = envelope(server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))
    assert listing["total"] == 1
    declaration = listing["list"][0]["declaration"]
    assert declaration["meta"]["runner"]["protocol"] == "line/1"
    tools = envelope(server.client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 10}))
    assert tools[0]["provider"] == "echo_tool"


def test_no_python_environment_is_built(server: DaemonServer) -> None:
    assert items_of(call_tool(Target(server.client, TENANT), "echo", {"text": "x"}))
    folders = [path for path in Path(server.settings.working_path).glob("tester/echo_tool-*") if path.is_dir()]
    assert folders and all((folder / "main.js").is_file() for folder in folders)
    assert not any((folder / ".venv").exists() for folder in folders)
