"""Process lifetime: plugins die with the daemon, crash loops stop, launches are bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from plugin_daemon.runtime import EventKind, InstanceState, PluginSpec, PluginUnavailable
from plugin_daemon_local import LocalRuntime

from tests.runtimes.local.local_runtime_support import SHARED_WORK, invoke, make_settings, texts, tool_request

pytestmark = pytest.mark.slow

Prepared = Callable[[str], PluginSpec]
HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize("mode", ["daemon", "reaper"])
def test_plugin_dies_when_the_daemon_is_killed(prepared: Prepared, tmp_path: Path, mode: str) -> None:
    spec = prepared("echo_tool")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(
            {
                "settings": {"PLUGIN_DAEMON_HOME": str(tmp_path / "home"), "PLUGIN_WORKING_PATH": str(SHARED_WORK)},
                "identifier": spec.identifier,
                "plugin_id": spec.plugin_id,
                "checksum": spec.checksum,
                "declaration": spec.declaration,
                "package_path": str(spec.package_path),
            }
        )
    )
    top = subprocess.Popen(
        [sys.executable, str(HERE / "orphan_daemon.py"), mode, str(spec_file)],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert top.stdout is not None
        line = _readline(top, timeout=60)
        pids = json.loads(line)
        assert _alive(pids["plugin"])
        os.kill(pids["daemon"], signal.SIGKILL)
        # With a subreaper above the daemon the orphan's parent is not pid 1, so the SDK's own
        # check never fires: only PR_SET_PDEATHSIG stops it.
        assert _wait_dead(pids["plugin"], timeout=5), "the plugin outlived its daemon"
    finally:
        top.kill()
        top.wait(timeout=10)


def _readline(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    import selectors

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise TimeoutError("the child daemon printed nothing")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the child daemon exited with {process.wait(timeout=5)}")
    return line


@pytest.mark.anyio
async def test_crash_loop_ends_in_failed(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    settings = make_settings(tmp_path, PLUGIN_RESTART_MAX_ATTEMPTS=2)
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        events = await invoke(runtime, spec, "crash")
        assert events[-1].data["error_type"] == "PluginProcessExited"
        assert runtime.state(spec.identifier) is InstanceState.RESTARTING
        with anyio.fail_after(30):
            await runtime.ensure_ready(spec, timeout=30)
        events = await invoke(runtime, spec, "crash")
        assert events[-1].kind is EventKind.ERROR
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(10):
            await runtime.ensure_ready(spec, timeout=10)
        assert caught.value.reason == "failed"
        assert "gave up after 2 consecutive failed starts" in caught.value.message
        assert "exited with code 3" in caught.value.message
        health = runtime.health()["plugins"][spec.identifier]
        assert health["state"] == "failed" and health["pid"] is None
        assert runtime.problems() == ["1 local plugin(s) failed for good (restarts exhausted or launch failed)"]


@pytest.mark.anyio
async def test_launches_are_bounded(prepared: Prepared, tmp_path: Path) -> None:
    specs = [prepared("echo_tool"), prepared("echo_tool_new")]
    settings = make_settings(tmp_path, PLUGIN_LOCAL_LAUNCHING_CONCURRENT=1)
    progress: dict[str, list[str]] = {spec.identifier: [] for spec in specs}
    async with LocalRuntime(settings) as runtime:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for spec in specs:
                    group.start_soon(_ready, runtime, spec, progress[spec.identifier].append)
        waited = [lines for lines in progress.values() if any("waiting for a launch slot" in x for x in lines)]
        assert len(waited) == 1, progress
        for spec in specs:
            assert texts(await invoke(runtime, spec, "echo", {"text": "ok"})) == ["ok"]


async def _ready(runtime: LocalRuntime, spec: PluginSpec, progress: Callable[[str], None]) -> None:
    await runtime.ensure_ready(spec, timeout=60, progress=progress)


@pytest.mark.anyio
async def test_two_runtimes_build_one_venv_once(specs: Callable[[str], PluginSpec], tmp_path: Path) -> None:
    spec = specs("echo_tool")
    settings = make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd")
    lines: list[str] = []
    with anyio.fail_after(300):
        async with LocalRuntime(settings) as first, LocalRuntime(settings) as second:
            async with anyio.create_task_group() as group:
                for runtime in (first, second):
                    group.start_soon(_ready, runtime, spec, lines.append)
            assert sum("building environment" in line for line in lines) == 1, lines
            for runtime in (first, second):
                assert texts(await invoke(runtime, spec, "echo", {"text": "x"})) == ["x"]


@pytest.mark.anyio
async def test_ensure_ready_timeout_says_starting(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        with pytest.raises(PluginUnavailable) as caught:
            await runtime.ensure_ready(spec, timeout=0.01)
        assert caught.value.reason == "starting"
        assert "not ready after 0.01 s" in caught.value.message
        # The launch went on without the caller.
        await runtime.ensure_ready(spec, timeout=60)
        session_id = uuid.uuid4().hex
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "echo", {"text": "late"})
        )
        with anyio.fail_after(10):
            assert [e.kind async for e in channel] == [EventKind.STREAM, EventKind.END]


@pytest.mark.anyio
async def test_no_heartbeat_in_time_is_a_launch_failure(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    # The SDK needs several hundred milliseconds to import and beat: 50 ms is never enough.
    async with LocalRuntime(make_settings(tmp_path, PLUGIN_READY_TIMEOUT=0.05)) as runtime:
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(30):
            await runtime.ensure_ready(spec, timeout=30)
        assert caught.value.reason == "failed"
        assert "sent no heartbeat within 0.05 s of starting; it was stopped" in caught.value.message
        assert runtime.health()["plugins"][spec.identifier]["pid"] is None
