"""Lazy start and idle stop (PLUGIN_IDLE_TIMEOUT): real SDK plugins stopped when idle, woken by calls.

The runtime tests drive ``LocalRuntime`` the way dispatch does (``ensure_ready`` then
``open_session``); the daemon test wakes a stopped plugin through an endpoint and through another
plugin's backwards call (Dify's inner API runs the tool by calling the daemon, as Dify does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from plugin_daemon.runtime import EventKind, InstanceState, PluginSpec
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.environment import EnvironmentBuilder

from tests.conformance.suite import Target, call_tool, items_of
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope
from tests.runtimes.local.local_runtime_support import BUILD_TIMEOUT, SHARED_WORK, invoke, make_settings, texts
from tests.runtimes.local.test_local_http import TENANT, install, local_settings
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

Prepared = Callable[[str], PluginSpec]
#: a short idle timeout, so that the tests see plugins stopped within seconds
IDLE = 1.0
#: how long a stop for idleness may take to show (timeout, a watchdog pass, the process exit)
STOPPED_WITHIN = 15.0


def idle_settings(tmp_path: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, PLUGIN_IDLE_TIMEOUT=IDLE, **overrides)


async def wait_state(runtime: LocalRuntime, identifier: str, state: InstanceState, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while runtime.state(identifier) is not state:
            await anyio.sleep(0.05)


async def pid_of(runtime: LocalRuntime, spec: PluginSpec) -> int:
    """A call as dispatch makes it: get the plugin ready, then open the session."""
    await runtime.ensure_ready(spec, timeout=60)
    events = await invoke(runtime, spec, "pid")
    assert events[-1].kind is EventKind.END, events
    return int(events[0].data["message"]["json_object"]["pid"])


@pytest.mark.anyio
async def test_idle_plugin_is_stopped_and_the_next_call_starts_it_again(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(idle_settings(tmp_path)) as runtime:
        first = await pid_of(runtime, spec)
        await wait_state(runtime, spec.identifier, InstanceState.STOPPED, STOPPED_WITHIN)
        health = runtime.health()["plugins"][spec.identifier]
        assert (health["state"], health["status"], health["pid"]) == ("stopped", "stopped (idle)", None)
        assert runtime.problems() == []  # stopped for idleness is not a failure
        assert runtime.instance_states() == {spec.plugin_id: "stopped"}
        with anyio.fail_after(10):
            while Path(f"/proc/{first}").exists() and "Z" not in _proc_state(first):
                await anyio.sleep(0.05)

        assert texts(await invoke(runtime, spec, "echo", {"text": "awake"})) == ["awake"]  # straight to the session
        second = await pid_of(runtime, spec)
        assert second != first
        assert runtime.launches == 2
        assert runtime.health()["plugins"][spec.identifier]["state"] == "ready"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return "Z"


@pytest.mark.anyio
async def test_32_concurrent_calls_to_a_stopped_plugin_start_it_once(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(idle_settings(tmp_path)) as runtime:
        await pid_of(runtime, spec)
        await wait_state(runtime, spec.identifier, InstanceState.STOPPED, STOPPED_WITHIN)
        launches = runtime.launches
        pids: list[int] = []

        async def call(through_ensure_ready: bool) -> None:
            if through_ensure_ready:
                pids.append(await pid_of(runtime, spec))
            else:  # a call that found the plugin ready just before it was stopped
                events = await invoke(runtime, spec, "pid")
                pids.append(int(events[0].data["message"]["json_object"]["pid"]))

        with anyio.fail_after(90):
            async with anyio.create_task_group() as group:
                for number in range(32):
                    group.start_soon(call, number % 2 == 0)
        assert len(pids) == 32 and len(set(pids)) == 1
        assert runtime.launches == launches + 1


@pytest.mark.anyio
async def test_idle_stop_never_stops_a_plugin_with_a_session_in_flight(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(idle_settings(tmp_path)) as runtime:
        before = await pid_of(runtime, spec)
        # a streamed answer four times longer than the idle timeout
        events = await invoke(runtime, spec, "ticks", {"count": 9, "interval": IDLE / 2}, timeout=60)
        assert texts(events) == [str(number) for number in range(9)]
        assert events[-1].kind is EventKind.END
        assert runtime.state(spec.identifier) is InstanceState.READY
        assert await pid_of(runtime, spec) == before
        assert runtime.launches == 1
        await wait_state(runtime, spec.identifier, InstanceState.STOPPED, STOPPED_WITHIN)


@pytest.mark.anyio
async def test_always_on_plugins_start_with_the_daemon_and_stay(prepared: Prepared, tmp_path: Path) -> None:
    echo, wake = prepared("echo_tool"), prepared("wake_me")
    settings = idle_settings(tmp_path, PLUGIN_ALWAYS_ON=f" {echo.plugin_id} ,other/plugin")
    async with LocalRuntime(settings) as runtime:
        assert runtime.starts_with_daemon(echo.identifier)
        assert not runtime.starts_with_daemon(wake.identifier)
        await pid_of(runtime, echo)
        await pid_of(runtime, wake)
        await wait_state(runtime, wake.identifier, InstanceState.STOPPED, STOPPED_WITHIN)
        assert runtime.state(echo.identifier) is InstanceState.READY
    never = LocalRuntime(make_settings(tmp_path, PLUGIN_IDLE_TIMEOUT=0))
    assert never.starts_with_daemon(wake.identifier) and never.idle_policy.everything_always_on


# --- through the daemon: endpoints and backwards calls wake a stopped plugin ----------------------


def wait_idle_stopped(server: DaemonServer, identifier: str) -> None:
    def stopped() -> bool:
        health = server.client.get("/health/check").json()
        plugin = health["runtimes"]["local"]["plugins"].get(identifier) or {}
        return plugin.get("status") == "stopped (idle)"

    wait_for(stopped, STOPPED_WITHIN, f"{identifier} to be stopped for idleness")


def test_an_endpoint_and_a_backwards_call_wake_a_stopped_plugin(tmp_path: Path) -> None:
    with DifyInnerAPI(key="inner-key") as inner_api:
        settings = local_settings(
            tmp_path / "home", inner_api, PLUGIN_IDLE_TIMEOUT=IDLE, PLUGIN_ALWAYS_ON="tester/echo_tool"
        )
        with running_daemon(settings) as server:
            install(server, "echo_tool")
            wake = install(server, "wake_me")
            runtime = server.daemon.control_panel.runtimes["local"]
            assert envelope(
                server.client.post(
                    f"/plugin/{TENANT}/endpoint/setup",
                    json={"plugin_unique_identifier": wake, "user_id": "u1", "settings": {}, "name": "pid"},
                )
            )
            listed = envelope(server.client.get(f"/plugin/{TENANT}/endpoint/list", params={"page": 1, "page_size": 10}))
            hook = listed[0]["hook_id"]

            # an endpoint call
            wait_idle_stopped(server, wake)
            launches = runtime.launches
            with httpx.Client(base_url=server.url, timeout=60) as public:
                answer = public.get(f"/e/{hook}/pid")
            assert answer.status_code == 200, answer.text
            assert answer.json()["pid"] > 0
            assert runtime.launches == launches + 1

            # echo_tool (always on) asks Dify to run wake_me's tool; Dify calls the daemon for it
            def run_tool(body: Any) -> list[dict[str, Any]]:
                with httpx.Client(base_url=server.url, headers={"X-Api-Key": TEST_KEY}, timeout=60) as client:
                    events = call_tool(
                        Target(client, TENANT), body["tool"], plugin_id="tester/wake_me", provider=body["provider"]
                    )
                return items_of(events)

            inner_api.tool_answer = run_tool
            wait_idle_stopped(server, wake)
            launches = runtime.launches
            items = items_of(
                call_tool(
                    Target(server.client, TENANT),
                    "call_tool",
                    {"provider": "wake_me", "tool_name": "pid", "parameters": json.dumps({})},
                )
            )
            assert items[0]["type"] == "json" and items[0]["message"]["json_object"]["pid"] > 0
            assert runtime.launches == launches + 1
            assert runtime.state(wake).value == "ready"


@pytest.mark.anyio
async def test_install_compiles_the_plugins_own_code(specs: Callable[[str], PluginSpec], tmp_path: Path) -> None:
    """A plugin cannot write its code folder: what is not compiled at install is compiled at every start."""
    spec = specs("wake_me")
    builder = EnvironmentBuilder(make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd"))
    builder.cache_dir = SHARED_WORK / ".uv-cache"  # the shared uv cache: nothing is downloaded again
    with anyio.fail_after(BUILD_TIMEOUT):
        layout = await builder.prepare(spec, lambda line: None)
    for module in ("tools/pid", "endpoints/pid", "provider/wake_me", "main"):
        folder, name = (layout.workdir / module).parent, (layout.workdir / module).name
        assert list((folder / "__pycache__").glob(f"{name}.cpython-*.pyc")), f"{module}.py was not compiled"
    assert list((layout.venv / "lib").glob("python3.*/site-packages/dify_plugin/__pycache__/plugin.cpython-*.pyc"))
