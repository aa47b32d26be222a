"""The local runtime with real plugin processes (dify_plugin SDK), no mocks."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from plugin_daemon.runtime import EventKind, InstanceState, PluginSpec, PluginUnavailable
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.environment import PluginLayout, read_marker

from tests.runtimes.local.local_runtime_support import invoke, make_settings, texts, tool_request

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Prepared = Callable[[str], PluginSpec]


async def test_launch_echo_and_multi(prepared: Prepared, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = prepared("echo_tool")
    lines: list[str] = []
    caplog.set_level(logging.DEBUG, logger=f"plugin.{spec.plugin_id}")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        assert runtime.state(spec.identifier) is InstanceState.ABSENT
        with anyio.fail_after(60):
            await runtime.ensure_ready(spec, timeout=60, progress=lines.append)
        assert runtime.state(spec.identifier) is InstanceState.READY
        assert lines[-2:] == ["starting plugin process", "ready"]
        # The SDK's log events reach the daemon's log under plugin.<id>, at the plugin's level.
        logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
        assert (f"plugin.{spec.plugin_id}", logging.INFO, "Installed tool: echo_tool") in logged

        events = await invoke(runtime, spec, "echo", {"text": "hello"})
        assert [e.kind for e in events] == [EventKind.STREAM, EventKind.END]
        assert texts(events) == ["hello"]

        multi = await invoke(runtime, spec, "multi")
        assert [e.data["type"] for e in multi if e.kind is EventKind.STREAM] == ["text", "json", "variable", "variable"]
        assert multi[-1].kind is EventKind.END

        failed = await invoke(runtime, spec, "fail")
        assert failed[-1].kind is EventKind.ERROR
        assert failed[-1].data["error_type"] == "ValueError" and failed[-1].data["message"] == "boom"

        health = runtime.health()["plugins"][spec.identifier]
        assert health["state"] == "ready" and health["pid"] and health["restarts"] == 0
    assert runtime.state(spec.identifier) is InstanceState.ABSENT


async def test_sessions_are_multiplexed(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        results: list[list[str]] = []

        async def one() -> None:
            results.append(texts(await invoke(runtime, spec, "sleep", {"seconds": 1}, timeout=20)))

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
        elapsed = time.monotonic() - started
        assert results == [["slept"]] * 50
        assert elapsed < 4.0, f"50 one-second sessions took {elapsed:.1f} s"


async def test_crash_fails_sessions_at_once_then_restarts(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        first_pid = runtime.health()["plugins"][spec.identifier]["pid"]
        session_id = uuid.uuid4().hex
        bystander_id = uuid.uuid4().hex
        bystander = await runtime.open_session(
            spec.identifier, bystander_id, tool_request(bystander_id, "echo_tool", "sleep", {"seconds": 30})
        )
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "crash", {})
        )
        events = []
        with anyio.fail_after(10):
            async for event in channel:
                events.append((time.monotonic(), event))
        assert [e.kind for _, e in events] == [EventKind.STREAM, EventKind.ERROR]
        error = events[-1][1].data
        assert error["error_type"] == "PluginProcessExited"
        assert "exited with code 3" in error["message"] and spec.plugin_id in error["message"]
        assert events[-1][0] - events[0][0] < 2.0  # at once, not at a timeout
        with anyio.fail_after(5):
            other = [event async for event in bystander]
        assert [e.kind for e in other] == [EventKind.ERROR]
        assert other[0].data["error_type"] == "PluginProcessExited"

        with anyio.fail_after(30):
            await runtime.ensure_ready(spec, timeout=30)
        health = runtime.health()["plugins"][spec.identifier]
        assert health["restarts"] == 1 and health["pid"] != first_pid
        assert "exited with code 3" in health["last_error"]
        assert texts(await invoke(runtime, spec, "echo", {"text": "again"})) == ["again"]


async def test_stderr_tail_is_in_the_exit_error(
    prepared: Prepared, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = prepared("echo_tool")
    caplog.set_level(logging.WARNING, logger=f"plugin.{spec.plugin_id}")
    # faulthandler makes the crash below write a "Fatal Python error" and a traceback to stderr.
    async with LocalRuntime(make_settings(tmp_path), extra_env={"PYTHONFAULTHANDLER": "1"}) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        session_id = uuid.uuid4().hex
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "sleep", {"seconds": 30})
        )
        os.kill(pid, signal.SIGSEGV)
        with anyio.fail_after(10):
            events = [event async for event in channel]
        message = events[-1].data["message"]
        assert events[-1].data["error_type"] == "PluginProcessExited"
        assert "exited with code -11 (killed by SIGSEGV); stderr tail:" in message
        assert "Fatal Python error: Segmentation fault" in message
        assert len(message) < 4096 + 200  # the tail is bounded
        # stderr is logged too (lines read together make one record: how many is up to the pipe)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(text.startswith("Fatal Python error: Segmentation fault") for text in warnings), warnings


async def test_oversize_frame_fails_only_its_session(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        events = await invoke(runtime, spec, "huge", {"size": 6 * 1024 * 1024})
        assert [e.kind for e in events] == [EventKind.ERROR]
        assert events[0].data["error_type"] == "PluginFrameTooLarge"
        assert "PLUGIN_RUNTIME_MAX_BUFFER_SIZE (5242880 bytes)" in events[0].data["message"]
        assert texts(await invoke(runtime, spec, "echo", {"text": "still here"})) == ["still here"]
        assert runtime.health()["plugins"][spec.identifier]["pid"] == pid
        big = await invoke(runtime, spec, "huge", {"size": 4 * 1024 * 1024})
        assert len(texts(big)[0]) == 4 * 1024 * 1024


async def test_memory_limit_kills_the_plugin(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")  # resource.memory: 256 MiB
    settings = make_settings(tmp_path, PLUGIN_MEMORY_LIMIT_FLOOR=128 * 1024 * 1024)
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        started = time.monotonic()
        events = await invoke(runtime, spec, "hog", {"mb": 400, "seconds": 20}, timeout=15)
        assert time.monotonic() - started < 10
        assert [e.kind for e in events] == [EventKind.ERROR]
        error = events[0].data
        assert error["error_type"] == "PluginMemoryLimitExceeded"
        assert "over its memory limit of 256 MiB" in error["message"]
        assert "PLUGIN_MEMORY_LIMIT_FLOOR); it was stopped" in error["message"]
        with anyio.fail_after(30):
            await runtime.ensure_ready(spec, timeout=30)
        assert texts(await invoke(runtime, spec, "hog", {"mb": 50, "seconds": 0})) == ["done"]


async def test_a_declared_memory_below_the_floor_is_not_taken_literally(prepared: Prepared, tmp_path: Path) -> None:
    # Most manifests carry a placeholder (1 MiB in many official plugins); the Go daemon enforces
    # none. Here 256 MiB is declared and the default floor (1 GiB) is what counts.
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        assert texts(await invoke(runtime, spec, "hog", {"mb": 400, "seconds": 1.5}, timeout=15)) == ["done"]
        assert runtime.health()["plugins"][spec.identifier]["pid"] == pid


async def test_silent_plugin_is_replaced(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    settings = make_settings(tmp_path, PLUGIN_HEARTBEAT_TIMEOUT=2.5)
    async with LocalRuntime(settings, extra_env={"HEARTBEAT_INTERVAL": "0.5"}) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        await anyio.sleep(3.5)  # healthy plugins keep beating: nothing happens
        assert runtime.health()["plugins"][spec.identifier]["pid"] == pid
        session_id = uuid.uuid4().hex
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "sleep", {"seconds": 30})
        )
        os.kill(pid, signal.SIGSTOP)
        with anyio.fail_after(10):
            events = [event async for event in channel]
        assert events[-1].data["error_type"] == "PluginUnresponsive"
        with anyio.fail_after(30):
            await runtime.ensure_ready(spec, timeout=30)
        assert runtime.health()["plugins"][spec.identifier]["pid"] != pid


async def test_restart_with_existing_venv_does_not_rebuild(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    settings = make_settings(tmp_path)
    layout = PluginLayout.for_identifier(settings.working_path, spec.identifier)
    marker_before = read_marker(layout)
    assert marker_before is not None and marker_before["checksum"] == spec.checksum
    for _ in range(2):
        lines: list[str] = []
        started = time.monotonic()
        async with LocalRuntime(settings) as runtime:
            await runtime.ensure_ready(spec, timeout=60, progress=lines.append)
            elapsed = time.monotonic() - started
            assert texts(await invoke(runtime, spec, "echo", {"text": "x"})) == ["x"]
        assert not any("building environment" in line for line in lines), lines
        assert elapsed < 10, f"a restart with a built venv took {elapsed:.1f} s"
    assert read_marker(layout) == marker_before


async def test_stale_marker_rebuilds(specs: Callable[[str], PluginSpec], tmp_path: Path) -> None:
    spec = specs("echo_tool")
    settings = make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd")
    lines: list[str] = []
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=300, progress=lines.append)
    assert lines[:2] == ["extracting package", "building environment with Python 3.11 (uv)"]
    layout = PluginLayout.for_identifier(settings.working_path, spec.identifier)
    layout.marker.write_text('{"checksum": "something-else"}')
    (layout.venv / "stale-file").write_text("x")
    lines.clear()
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=300, progress=lines.append)
        assert texts(await invoke(runtime, spec, "echo", {"text": "rebuilt"})) == ["rebuilt"]
    assert "building environment with Python 3.11 (uv)" in lines and "extracting package" not in lines
    assert not (layout.venv / "stale-file").exists()
    assert read_marker(layout)["checksum"] == spec.checksum  # type: ignore[index]


async def test_broken_start_reports_stderr(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("broken_start")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(60):
            await runtime.ensure_ready(spec, timeout=60)
        assert caught.value.reason == "failed"
        assert "RuntimeError: cannot start: missing config" in caught.value.message
        assert "exited with code 1 before it was ready" in caught.value.message
        assert runtime.state(spec.identifier) is InstanceState.FAILED
        # Asking again answers at once with the same reason; stop() forgets the failure.
        with pytest.raises(PluginUnavailable), anyio.fail_after(2):
            await runtime.ensure_ready(spec, timeout=60)
        await runtime.stop(spec.identifier)
        assert runtime.state(spec.identifier) is InstanceState.ABSENT


async def test_plugin_environment_has_no_daemon_secrets(
    prepared: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = prepared("echo_tool")
    secrets = {
        "SERVER_KEY": "server-secret",
        "DB_PASSWORD": "db-secret",
        "DIFY_INNER_API_KEY": "inner-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_TEST_LOCALE", "kept")
    settings = make_settings(tmp_path, HTTPS_PROXY="http://127.0.0.1:9")
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        events = await invoke(runtime, spec, "env")
    environ = next(e.data["message"]["json_object"]["environ"] for e in events if e.kind is EventKind.STREAM)
    assert not set(secrets) & set(environ)
    assert not any(value in environ.values() for value in secrets.values())
    assert environ["INSTALL_METHOD"] == "local"
    assert environ["HTTPS_PROXY"] == "http://127.0.0.1:9"
    assert environ["LC_TEST_LOCALE"] == "kept"
    allowed = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    allowed |= {"REQUESTS_CA_BUNDLE", "VIRTUAL_ENV", "INSTALL_METHOD", "HTTPS_PROXY", "https_proxy"}
    extra = {name for name in environ if name not in allowed and not name.startswith("LC_")}
    # What the interpreter itself adds (and nothing of ours).
    # PYTHONBREAKPOINT=0 is the daemon's own since #17 (no pdb prompt in the protocol stream)
    assert extra <= {"PWD", "SHLVL", "_", "GEVENT_SUPPORT", "PYTHONBREAKPOINT"}, extra


async def test_extra_variables_reach_the_plugin(
    prepared: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = prepared("echo_tool")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))  # passed whenever it is set
    monkeypatch.setenv("HF_HOME", str(tmp_path / "models"))
    settings = make_settings(tmp_path, PLUGIN_EXTRA_ENV="HF_HOME PLUGIN_REGION=eu-west-1 NOT_SET_ANYWHERE")
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        events = await invoke(runtime, spec, "env")
    environ = next(e.data["message"]["json_object"]["environ"] for e in events if e.kind is EventKind.STREAM)
    assert environ["HF_HOME"] == str(tmp_path / "models") and environ["PLUGIN_REGION"] == "eu-west-1"
    assert environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")
    assert "NOT_SET_ANYWHERE" not in environ


async def test_a_traceback_on_stdout_is_in_the_launch_error_and_logged_once(
    prepared: Prepared, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = prepared("stdout_traceback")
    caplog.set_level(logging.WARNING, logger=f"plugin.{spec.plugin_id}")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(60):
            await runtime.ensure_ready(spec, timeout=60)
    message = caught.value.message
    assert "exited with code 1 before it was ready" in message
    assert "stderr tail:\nSyntaxWarning: invalid escape sequence" in message
    assert "stdout tail (lines that are not protocol frames):\nTraceback (most recent call last):" in message
    assert "ModuleNotFoundError: No module named 'provider.sagemaker_helpers'" in message
    stdout_records = [
        r.getMessage() for r in caplog.records if "on stdout that are not protocol frames" in r.getMessage()
    ]
    assert len(stdout_records) == 1 and "ModuleNotFoundError" in stdout_records[0]
    assert not any("unreadable output line" in r.getMessage() for r in caplog.records)


async def test_python_312_plugin_gets_312(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool_new")  # meta.runner.version 3.12, pyproject.toml + uv.lock
    settings = make_settings(tmp_path)
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        assert texts(await invoke(runtime, spec, "echo", {"text": "new"})) == ["new"]
    marker = read_marker(PluginLayout.for_identifier(settings.working_path, spec.identifier))
    assert marker is not None and marker["python"].startswith("3.12.")
    venv_cfg = (PluginLayout.for_identifier(settings.working_path, spec.identifier).venv / "pyvenv.cfg").read_text()
    assert "version_info = 3.12." in venv_cfg


async def test_stop_and_relaunch(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        session_id = uuid.uuid4().hex
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "sleep", {"seconds": 30})
        )
        with anyio.fail_after(15):
            await runtime.stop(spec.identifier)
            events = [event async for event in channel]
        assert events[-1].data["error_type"] == "PluginStopped"
        assert not _alive(pid)
        with pytest.raises(PluginUnavailable):
            await runtime.open_session(spec.identifier, "x", b"{}")
        await runtime.ensure_ready(spec, timeout=60)
        assert texts(await invoke(runtime, spec, "echo", {"text": "back"})) == ["back"]


async def test_closed_session_drops_later_frames(prepared: Prepared, tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        session_id = uuid.uuid4().hex
        channel = await runtime.open_session(
            spec.identifier, session_id, tool_request(session_id, "echo_tool", "sleep", {"seconds": 0.5})
        )
        await channel.aclose()
        with anyio.fail_after(2):
            assert [event async for event in channel] == []
        assert texts(await invoke(runtime, spec, "sleep", {"seconds": 1})) == ["slept"]
        health = runtime.health()["plugins"][spec.identifier]
        assert health["sessions"] == 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
