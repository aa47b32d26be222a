"""The management commands against a daemon running real SDK plugins in the local runtime.

Install with progress, list, status (a real pid and memory), invoke a tool and stream an LLM answer
in a real ``plugin-daemon`` process (printed as it comes), tasks, uninstall.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from plugin_daemon.cli import cli
from plugin_daemon.packages import build_package

from tests.conftest import TEST_KEY
from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.openai_server import OpenAIServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TENANT = "tenant-cli-local"
INSTALL_DEADLINE = "600"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonServer]:
    home = tmp_path_factory.mktemp("local-cli-home")
    with running_daemon(make_settings(home, SERVER_KEY=TEST_KEY, PLATFORM="local")) as running:
        yield running


def environment(server: DaemonServer) -> dict[str, str | None]:
    return {"PLUGIN_DAEMON_URL": server.url, "PLUGIN_DAEMON_KEY": TEST_KEY, "PLUGIN_DAEMON_TENANT": TENANT}


def run(server: DaemonServer, *arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), env={**environment(server), "SERVER_KEY": None})


def install(server: DaemonServer, plugin: str, tmp_path: Path) -> Result:
    package = tmp_path / f"{plugin}.difypkg"
    package.write_bytes(build_package(PLUGINS / plugin))
    result = run(server, "install", str(package), "--runtime", "local", "--timeout", INSTALL_DEADLINE)
    assert result.exit_code == 0, result.output
    return result


def test_install_list_status_invoke_tasks_uninstall(server: DaemonServer, tmp_path: Path) -> None:
    installed = install(server, "echo_tool", tmp_path)
    assert "uploading echo_tool.difypkg..." in installed.stderr
    assert "installing tester/echo_tool" in installed.stderr
    assert "installed tester/echo_tool" in installed.stderr

    listing = json.loads(run(server, "list", "--json").stdout)
    assert [(item["plugin_id"], item["runtime_type"], item["state"]) for item in listing] == [
        ("tester/echo_tool", "local", "ready")
    ]
    status = json.loads(run(server, "status", "tester/echo_tool", "--json").stdout)["plugins"][0]
    assert status["state"] == "ready" and status["runtime"] == "local"
    assert isinstance(status["pid"], int) and status["restarts"] == 0 and status["last_error"] is None
    os.kill(status["pid"], 0)  # a real process
    table = run(server, "status")
    assert table.exit_code == 0 and str(status["pid"]) in table.stdout

    echoed = run(server, "invoke", "tester/echo_tool", "echo_tool", "echo", "--param", "text=hello from the cli")
    assert echoed.exit_code == 0, echoed.output
    assert echoed.stdout == "hello from the cli\n"
    failed = run(server, "invoke", "tester/echo_tool", "echo_tool", "fail")
    assert failed.exit_code == 1 and "Traceback" not in failed.output

    tasks = json.loads(run(server, "tasks", "--json").stdout)
    assert tasks[0]["status"] == "success"

    logs = run(server, "logs", "tester/echo_tool", "--json")
    assert logs.exit_code == 0, logs.output
    assert all(isinstance(json.loads(line), dict) for line in logs.stdout.splitlines())

    workdir = working_folder(server, listing[0]["plugin_unique_identifier"])
    assert (workdir / ".venv").is_dir()
    gone = run(server, "uninstall", "tester/echo_tool")
    assert gone.exit_code == 0 and "uninstalled tester/echo_tool" in gone.stdout
    assert json.loads(run(server, "list", "--json").stdout) == []
    # its extracted folder and environment are removed once it is stopped
    wait_for(lambda: not workdir.exists(), 60, "the uninstalled plugin's folder to be removed")


def working_folder(server: DaemonServer, identifier: str) -> Path:
    name_version, _, checksum = identifier.partition("/")[2].partition("@")
    author = identifier.partition("/")[0]
    return server.settings.working_path / author / f"{name_version.replace(':', '-')}@{checksum}"


def test_a_failed_install_leaves_no_folder_behind(
    server: DaemonServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="plugin_daemon_local.environment")
    package = tmp_path / "broken_start.difypkg"
    package.write_bytes(build_package(PLUGINS / "broken_start"))
    result = run(server, "install", str(package), "--runtime", "local", "--json", "--timeout", INSTALL_DEADLINE)
    assert result.exit_code == 1 and "install failed" in result.output
    task = json.loads(result.stdout)
    assert task["status"] == "failed"
    workdir = working_folder(server, task["plugins"][0]["plugin_unique_identifier"])
    wait_for(lambda: not workdir.exists(), 60, "the failed install's folder to be removed")
    # it was there (extracted, its environment built) and was removed, not merely never made
    assert any(record.getMessage().startswith(f"removed {workdir} ") for record in caplog.records)
    assert "broken" not in run(server, "list", "--json").stdout


def test_invoke_llm_prints_the_answer_as_it_streams(server: DaemonServer, tmp_path: Path) -> None:
    install(server, "mock_llm", tmp_path)
    with OpenAIServer(chunks=5, delay=0.3) as upstream:
        command = [sys.executable, "-m", "plugin_daemon.cli", "invoke", "tester/mock_llm", "mock_llm", "mock-model"]
        command += ["--llm", "--prompt", "hello", "--credential", f"endpoint_url={upstream.url}"]
        environ = {key: value for key, value in os.environ.items() if key != "SERVER_KEY"}
        environ.update({key: str(value) for key, value in environment(server).items()})
        process = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None
        arrivals: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            chunk = os.read(process.stdout.fileno(), 65536)  # returns what is there, as it comes
            if not chunk:
                break
            arrivals.append((time.monotonic(), chunk))
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        printed = b"".join(chunk for _, chunk in arrivals).decode()
        assert printed == upstream.expected_content() + "\n"
        assert len(arrivals) >= 3  # not one write at the end
        assert arrivals[-1][0] - arrivals[0][0] > 0.6  # 5 chunks 0.3 s apart, printed as they came


def test_the_live_log_of_a_local_plugin_shows_its_calls_and_restarts(server: DaemonServer, tmp_path: Path) -> None:
    if "tester/echo_tool" not in [item["plugin_id"] for item in json.loads(run(server, "list", "--json").stdout)]:
        install(server, "echo_tool", tmp_path)
    entries: list[dict[str, object]] = []
    live = threading.Event()

    client = httpx.Client(base_url=server.url, headers={"X-Api-Key": TEST_KEY}, timeout=60)

    def follow() -> None:
        params = {"plugin_id": "tester/echo_tool"}
        with client.stream("GET", f"/plugin/{TENANT}/debugging/logs", params=params) as response:
            for line in response.iter_lines():
                if line == ": live":
                    live.set()
                elif line.startswith("data: "):
                    entries.append(json.loads(line[len("data: ") :]))
                    if "restarting" in str(entries[-1]["message"]):
                        return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        watch_calls_and_restart(server, entries, live, follower)
    finally:
        client.close()  # the stream too: the daemon under test can stop


def watch_calls_and_restart(
    server: DaemonServer, entries: list[dict[str, object]], live: threading.Event, follower: threading.Thread
) -> None:
    wait_for(live.is_set, 30, "the live log stream")

    echoed = run(server, "invoke", "tester/echo_tool", "echo_tool", "echo", "--param", "text=hi")
    assert echoed.exit_code == 0, echoed.output
    call = wait_for(
        lambda: next((entry for entry in entries if "call tool/invoke_tool" in str(entry["message"])), None),
        30,
        "the call in the live log",
    )
    assert ": success in" in str(call["message"]) and call["source"] == "daemon"

    run(server, "invoke", "tester/echo_tool", "echo_tool", "crash")  # the process exits mid-call
    follower.join(60)
    assert not follower.is_alive(), entries
    messages = [str(entry["message"]) for entry in entries]
    assert any("call tool/invoke_tool" in message and "error" in message for message in messages), messages
    assert any("restarting in" in message for message in messages), messages
    kept = [json.loads(line) for line in run(server, "logs", "tester/echo_tool", "--json").stdout.splitlines()]
    assert any("restarting in" in str(entry["message"]) for entry in kept)
