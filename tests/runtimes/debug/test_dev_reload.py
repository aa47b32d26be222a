"""``plugin-daemon dev``: a plugin folder run against a daemon, restarted on every change, no call lost.

The command runs as a developer runs it (its own process, the daemon's URL, key and tenant) on a
copy of echo_tool. A loop calls the tool every 50 ms while its code is changed three times: each
change answers with the new code within 3 s, no call fails, and three ``reload`` events are on
the plugin's live log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.suite import Target, call_tool, items_of
from tests.conftest import TEST_KEY
from tests.runtimes.debug.debug_support import TENANT, debug_settings, wait_installed
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dap_client import DapClient
from tests.support.plugin_driver import PLUGINS_DIR, ensure_venv
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ECHO = "tester/echo_tool"
TOOL = """\
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class EchoTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        yield self.create_text_message("{prefix}" + str(tool_parameters.get("text", "")))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DaemonServer]:
    with running_daemon(debug_settings(tmp_path / "home")) as running:
        yield running


@contextlib.contextmanager
def running_dev(server: DaemonServer, tmp_path: Path, *options: str) -> Iterator[Path]:
    """``plugin-daemon dev`` on a copy of echo_tool; yields the copy."""
    venv = ensure_venv(PLUGINS_DIR / "echo_tool").parent.parent
    folder = tmp_path / "echo_tool"
    shutil.copytree(PLUGINS_DIR / "echo_tool", folder, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    command = [str(Path(sys.executable).parent / "plugin-daemon"), "dev", str(folder), "--venv", str(venv), *options]
    command += ["--url", server.url, "--key", TEST_KEY, "--tenant", TENANT]
    with open(tmp_path / "dev.log", "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield folder
    finally:
        process.send_signal(signal.SIGTERM)  # dev stops its plugin, then itself
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        print((tmp_path / "dev.log").read_text(errors="replace")[-3000:])


@pytest.fixture
def dev(server: DaemonServer, tmp_path: Path) -> Iterator[Path]:
    with running_dev(server, tmp_path) as folder:
        yield folder


def reload_events(server: DaemonServer, since: float) -> list[dict[str, Any]]:
    logs = server.client.get(f"/plugin/{TENANT}/debugging/logs", params={"plugin_id": ECHO, "follow": "false"})
    entries = [json.loads(line[len("data: ") :]) for line in logs.text.splitlines() if line.startswith("data: ")]
    return [entry for entry in entries if entry["time"] >= since and entry.get("type") == "reload"]


def test_three_edits_answer_with_new_code_and_lose_no_call(server: DaemonServer, dev: Path) -> None:
    wait_installed(server.client, ECHO)
    target = Target(server.client, TENANT)
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                answers.append(items_of(call_tool(target, "echo", {"text": "hi"}))[0]["message"]["text"])
            except Exception as exc:  # noqa: BLE001 - any failure is what the test counts
                failures.append(repr(exc))
            time.sleep(0.05)

    caller = threading.Thread(target=loop, daemon=True)
    caller.start()
    since = time.time()
    took: list[float] = []
    try:
        wait_for(lambda: "hi" in answers, 20, "the first answer")
        for version in (1, 2, 3):
            (dev / "tools" / "echo.py").write_text(TOOL.format(prefix=f"v{version}:"))
            edited = time.monotonic()
            wait_for(lambda: answers and answers[-1] == f"v{version}:hi", 3, f"v{version} to answer")  # noqa: B023
            took.append(time.monotonic() - edited)
    finally:
        stop.set()
        caller.join(timeout=30)
    print(f"\nnew code answering after {', '.join(f'{t:.2f} s' for t in took)}; {len(answers)} calls")
    assert failures == []
    wait_for(lambda: len(reload_events(server, since)) >= 3, 5, "three reload events")
    events = reload_events(server, since)
    assert len(events) == 3 and all(event["status"] == "success" for event in events)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_debug_stops_at_a_breakpoint_under_gevent(server: DaemonServer, tmp_path: Path) -> None:
    """--debug: an IDE (here a small DAP client) attaches, a breakpoint in the tool stops the call."""
    port = free_port()
    with running_dev(server, tmp_path, "--debug", str(port)) as folder:
        wait_installed(server.client, ECHO)
        target = Target(server.client, TENANT)
        dap = DapClient("127.0.0.1", port)
        try:
            dap.request("initialize", adapterID="test", pathFormat="path", linesStartAt1=True, columnsStartAt1=True)
            attach = dap.send("attach", justMyCode=True, redirectOutput=False)
            dap.event("initialized")
            source = str(folder / "tools" / "echo.py")
            answer = dap.request("setBreakpoints", source={"path": source}, breakpoints=[{"line": 10}])
            assert answer["breakpoints"][0]["verified"]
            dap.request("configurationDone")
            dap.response(attach)
            result: list[Any] = []
            caller = threading.Thread(target=lambda: result.append(call_tool(target, "echo", {"text": "stop"})))
            caller.start()
            stopped = dap.event("stopped")  # without GEVENT_SUPPORT=True it never comes
            assert stopped["reason"] == "breakpoint"
            (frame, *_) = dap.request("stackTrace", threadId=stopped["threadId"])["stackFrames"]
            assert frame["name"] == "_invoke" and frame["line"] == 10
            (scope, *_) = dap.request("scopes", frameId=frame["id"])["scopes"]
            variables = dap.request("variables", variablesReference=scope["variablesReference"])["variables"]
            assert {v["name"]: v["value"] for v in variables}["tool_parameters"] == "{'text': 'stop'}"
            assert caller.is_alive() and not result
            dap.request("continue", threadId=stopped["threadId"])
            caller.join(timeout=20)
            assert items_of(result[0])[0]["message"] == {"text": "stop"}
        finally:
            dap.close()
