"""The exact lines the daemon writes on a plugin's stdin (protocol.md §1.3 and §1.4).

The plugin is echo_tool with a ``main.py`` that copies its stdin into ``stdin.log`` (in its HOME,
the scratch it may write) before the SDK reads it, so the test reads the bytes the plugin really
received.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conformance.suite import Target, call_tool, items_of
from tests.runtimes.local.local_runtime_support import PLUGINS
from tests.runtimes.local.test_local_http import TENANT, local_settings
from tests.support.daemon_server import running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = pytest.mark.slow

TEE_MAIN = """\
import os

# A child process copies the real stdin into stdin.log and into a pipe that becomes our stdin.
_read, _write = os.pipe()
if os.fork() == 0:
    os.close(_read)
    with open(os.path.join(os.environ["HOME"], "stdin.log"), "ab", buffering=0) as log:
        while data := os.read(0, 65536):
            log.write(data)
            os.write(_write, data)
    os._exit(0)
os.close(_write)
os.dup2(_read, 0)

from dify_plugin import DifyPluginEnv, Plugin  # noqa: E402

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=120))

if __name__ == "__main__":
    plugin.run()
"""

ENVELOPE_KEYS = ["session_id", "conversation_id", "message_id", "app_id", "endpoint_id", "context", "event", "data"]


@pytest.fixture
def tee_plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "tee_tool"
    shutil.copytree(PLUGINS / "echo_tool", folder)
    (folder / "main.py").write_text(TEE_MAIN)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("name: echo_tool", "name: tee_tool", 1))
    return folder


def test_request_and_backwards_response_lines_are_exact(tmp_path: Path, tee_plugin: Path) -> None:
    from plugin_daemon.packages import build_package

    from tests.core.test_management_api import envelope, upload, wait_task

    with DifyInnerAPI(key="inner-key") as inner_api:
        settings = local_settings(tmp_path / "home", inner_api)
        with running_daemon(settings) as server:
            identifier = envelope(upload(server.client, build_package(tee_plugin), TENANT))["unique_identifier"]
            started = envelope(
                server.client.post(
                    f"/plugin/{TENANT}/management/install/identifiers",
                    json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
                )
            )
            assert wait_task(server.client, started["task_id"], TENANT, timeout=600)["status"] == "success"
            author, rest = identifier.split("/", 1)
            name, version_checksum = rest.split(":", 1)
            version, checksum = version_checksum.split("@")
            log = settings.working_path / ".scratch" / author / f"{name}-{version}@{checksum}" / "home" / "stdin.log"
            already = log.stat().st_size if log.exists() else 0  # the working folder outlives test runs
            target = Target(server.client, TENANT)
            items = items_of(
                call_tool(target, "storage", {"op": "set", "key": "k", "value": "v"}, plugin_id="tester/tee_tool")
            )
            assert items[0]["message"]["json_object"] == {"ok": True}
            written = log.read_bytes()[already:]
            lines = [json.loads(line) for line in written.split(b"\n") if line.strip()]

    request, response, end = lines
    assert list(request) == ENVELOPE_KEYS
    assert request["event"] == "request"
    assert request["data"] == {
        "user_id": "user-1",
        "type": "tool",
        "action": "invoke_tool",
        "provider": "echo_tool",
        "tool": "storage",
        "tool_parameters": {"op": "set", "key": "k", "value": "v"},
        "credentials": {},
        "credential_type": "api-key",
    }
    session_id = request["session_id"]
    for line in (response, end):
        assert list(line) == ENVELOPE_KEYS
        assert line["session_id"] == session_id
        assert line["event"] == "backwards_response"
        assert [line[key] for key in ENVELOPE_KEYS[1:6]] == [None] * 5
        assert list(line["data"]) == ["backwards_request_id", "event", "message", "data"]
    assert response["data"]["event"] == "response"
    assert response["data"]["message"] == "struct"
    assert response["data"]["data"] == {"data": "ok"}
    assert end["data"] == {
        "backwards_request_id": response["data"]["backwards_request_id"],
        "event": "end",
        "message": "",
        "data": None,
    }
