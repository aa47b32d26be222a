"""A line/1 plugin (Node.js, tests/plugins/line_echo_tool) on the local runtime, as Dify drives it.

The same conformance suite as the SDK's echo_tool runs against it: its package is a normal
.difypkg whose manifest names ``meta.runner.protocol: line/1``; the daemon runs ``node main.js``
in the plugin's folder (no Python environment) and translates between line/1 and the daemon's
session events.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_daemon.packages import build_package

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import Target, call_tool, items_of, plugin_error, sse
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import make_settings
from tests.runtimes.local.test_local_http import install
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),  # CI images have it
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
    listing = envelope(server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))
    identifier = listing["list"][0]["plugin_unique_identifier"]  # tester/echo_tool:0.0.1@<checksum>
    folder = Path(server.settings.working_path) / identifier.replace(":", "-")
    assert (folder / "main.js").is_file()
    assert not (folder / ".venv").exists()


def test_runs_under_the_same_isolation_as_python_plugins(server: DaemonServer) -> None:
    assert items_of(call_tool(Target(server.client, TENANT), "echo", {"text": "x"}))
    sandbox = server.daemon.control_panel.runtimes["local"].sandbox
    plugins = server.client.get("/health/check").json()["runtimes"]["local"]["plugins"]
    [pid] = [state["pid"] for identifier, state in plugins.items() if identifier.startswith("tester/echo_tool")]
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if sandbox.uids:  # a daemon run as root: each plugin under a uid of its own
        assert uid in sandbox.uids
    else:
        assert uid == os.geteuid()
    assert Path(f"/proc/{pid}/cwd").resolve().name.startswith("echo_tool-0.0.1@")


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_bash_plugin_echoes_and_its_error_name_is_mapped(server: DaemonServer) -> None:
    folder = Path(__file__).parents[3] / "contrib" / "line-plugins" / "echo_sh"
    identifier = envelope(upload(server.client, build_package(folder), TENANT))["unique_identifier"]
    started = envelope(
        server.client.post(
            f"/plugin/{TENANT}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        )
    )
    assert wait_task(server.client, started["task_id"], TENANT, timeout=120)["status"] == "success"
    target = Target(server.client, TENANT)
    events = call_tool(target, "echo", {"text": "from bash"}, plugin_id="example/echo_sh", provider="echo_sh")
    assert items_of(events) == [{"type": "text", "message": {"text": "from bash"}, "meta": None}]
    refused = server.client.post(
        f"/plugin/{TENANT}/dispatch/tool/validate_credentials",
        headers={"X-Plugin-ID": "example/echo_sh"},
        json={"user_id": "u", "data": {"provider": "echo_sh", "credentials": {"api_key": "bad"}}},
    )
    error = plugin_error(sse(refused)[-1])
    assert (error["error_type"], error["message"]) == ("CredentialsValidateFailedError", "invalid api_key")


def test_llm_call_into_dify_goes_through_the_same_invoker(server: DaemonServer, inner_api: DifyInnerAPI) -> None:
    inner_api.reset()
    target = Target(server.client, TENANT)
    items = items_of(call_tool(target, "llm", {"provider": "openai", "model": "gpt", "query": "hi"}))
    assert "".join(item["message"]["text"] for item in items) == inner_api.expected_llm_text()
    sent = inner_api.calls("invoke/llm")[-1].json
    assert sent["tenant_id"] == TENANT and sent["user_id"] == "user-1"
    assert sent["prompt_messages"] == [{"role": "user", "content": "hi"}]
