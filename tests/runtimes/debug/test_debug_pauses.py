"""A debugging plugin that pauses or restarts, as a developer's does, loses no call.

A real SDK plugin in remote mode is stopped with SIGSTOP for longer than the heartbeat timeout
(set short): it stays installed and is listed silent while its TCP connection lives; after SIGCONT
it answers the call made meanwhile, and new ones. Restarted (SIGINT, as watchfiles does, then
started again), the calls made in the gap wait for it (the reload grace) and a ``reload`` event goes
on its log stream; one that does not come back is uninstalled when the grace is over.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.suite import Target, call_tool, items_of
from tests.runtimes.debug.debug_support import (
    TENANT,
    SdkPlugin,
    debug_port,
    debug_settings,
    debugging_key,
    installations,
    wait_installed,
    wait_uninstalled,
)
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ECHO = "tester/echo_tool"
HEARTBEAT_TIMEOUT = 1.5
RELOAD_GRACE = 6.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("debug-pauses-home")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[DaemonServer]:
    settings = debug_settings(
        home,
        PLUGIN_REMOTE_INSTALLING_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT,
        PLUGIN_REMOTE_INSTALLING_RELOAD_GRACE=RELOAD_GRACE,
    )
    with running_daemon(settings) as running:
        yield running


@pytest.fixture
def echo(server: DaemonServer, home: Path) -> Iterator[SdkPlugin]:
    plugin = SdkPlugin(
        "echo_tool", debug_port(server), debugging_key(server.client), home / "logs", env={"HEARTBEAT_INTERVAL": "0.3"}
    ).start()
    try:
        wait_installed(server.client, ECHO)
        yield plugin
    finally:
        if plugin.proc is not None and plugin.alive:
            os.killpg(plugin.proc.pid, signal.SIGCONT)
        plugin.kill()


def listed(server: DaemonServer) -> dict[str, Any]:
    body = server.client.get(f"/plugin/{TENANT}/debugging/plugins").json()
    assert body["code"] == 0, body
    (plugin,) = body["data"]
    return plugin


def test_a_stopped_plugin_is_shown_silent_kept_and_answers_after_sigcont(server: DaemonServer, echo: SdkPlugin) -> None:
    target = Target(server.client, TENANT)
    assert items_of(call_tool(target, "echo", {"text": "before"}))[0]["message"] == {"text": "before"}
    before = listed(server)
    assert before["state"] == "ready" and before["silent_for"] is None
    assert echo.proc is not None
    os.killpg(echo.proc.pid, signal.SIGSTOP)
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.append(call_tool(target, "echo", {"text": "paused"})))
    caller.start()

    # Silent for more than twice the heartbeat timeout: shown silent, the same connection, still installed.
    wait_for(lambda: (listed(server)["silent_for"] or 0) > 2 * HEARTBEAT_TIMEOUT, 20, "the plugin to be silent a while")
    during = listed(server)
    assert during["state"] == "silent" and during["alive"]
    assert during["connected_at"] == before["connected_at"]
    assert during["sessions"] == 1  # the call made while it is stopped waits
    assert ECHO in installations(server.client)
    health = server.client.get("/health/check", headers={"X-Api-Key": server.settings.SERVER_KEY}).json()
    (shown,) = health["runtimes"]["remote"]["plugins"].values()
    assert shown["state"] == "silent"
    assert caller.is_alive() and not result

    os.killpg(echo.proc.pid, signal.SIGCONT)
    caller.join(timeout=20)
    assert result, "the call made while the plugin was stopped did not answer after SIGCONT"
    assert items_of(result[0])[0]["message"] == {"text": "paused"}
    wait_for(lambda: listed(server)["state"] == "ready", 10, "the plugin to be shown ready again")
    after = listed(server)
    assert after["connected_at"] == before["connected_at"] and after["silent_for"] is None
    assert items_of(call_tool(target, "echo", {"text": "after"}))[0]["message"] == {"text": "after"}
    logs = server.client.get(f"/plugin/{TENANT}/debugging/logs", params={"plugin_id": ECHO, "follow": "false"})
    assert "silent: no heartbeat for" in logs.text and "answering again after" in logs.text


def log_events(server: DaemonServer, since: float) -> list[dict[str, Any]]:
    """The plugin's log entries since ``since`` (unix time): the module's daemon keeps earlier ones."""
    logs = server.client.get(f"/plugin/{TENANT}/debugging/logs", params={"plugin_id": ECHO, "follow": "false"})
    entries = [json.loads(line[len("data: ") :]) for line in logs.text.splitlines() if line.startswith("data: ")]
    return [entry for entry in entries if entry["time"] >= since]


def interrupt(plugin: SdkPlugin) -> None:
    """Stop the plugin as watchfiles does (SIGINT: the SDK exits at once)."""
    assert plugin.proc is not None
    os.killpg(plugin.proc.pid, signal.SIGINT)
    plugin.proc.wait(timeout=10)


def test_calls_made_while_a_plugin_restarts_wait_for_it(server: DaemonServer, echo: SdkPlugin) -> None:
    target = Target(server.client, TENANT)
    answers: list[Any] = []
    failures: list[Any] = []
    stop = threading.Event()
    between_calls = threading.Lock()  # held by each call: a call in flight when its process exits fails

    def loop() -> None:
        while not stop.is_set():
            with between_calls:
                try:
                    items = items_of(call_tool(target, "echo", {"text": "loop"}))
                    answers.append(items[0]["message"])
                except Exception as exc:  # noqa: BLE001 - any failure is what the test counts
                    failures.append(repr(exc))
            time.sleep(0.05)

    caller = threading.Thread(target=loop, daemon=True)
    caller.start()
    try:
        wait_for(lambda: len(answers) >= 3, 20, "the loop to get answers")
        since = time.time()
        with between_calls:
            interrupt(echo)
        gone_at = len(answers)
        echo.start()
        wait_for(lambda: len(answers) >= gone_at + 5, RELOAD_GRACE + 20, "answers from the restarted plugin")
    finally:
        stop.set()
        caller.join(timeout=30)
    assert failures == []
    assert all(answer == {"text": "loop"} for answer in answers)
    reloads = [event for event in log_events(server, since) if event.get("type") == "reload"]
    assert len(reloads) == 1 and reloads[0]["status"] == "success"
    assert reloads[0]["message"].startswith(f"{ECHO} reloaded in ")


def test_a_plugin_that_does_not_come_back_is_uninstalled_after_the_grace(server: DaemonServer, echo: SdkPlugin) -> None:
    since = time.time()
    interrupt(echo)
    left = time.monotonic()
    assert ECHO in installations(server.client)  # kept for the grace
    wait_uninstalled(server.client, ECHO, timeout=RELOAD_GRACE + 10)
    assert time.monotonic() - left >= RELOAD_GRACE - 1
    failed = [
        event for event in log_events(server, since) if event.get("type") == "reload" and event["status"] == "failed"
    ]
    assert failed and "did not come back within" in failed[-1]["message"]
    gone = server.client.post(
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": ECHO},
        json={"user_id": "u", "data": {"provider": "echo_tool", "tool": "echo", "tool_parameters": {}}},
    )
    assert gone.status_code == 404
