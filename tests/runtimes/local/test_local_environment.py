"""Building plugin environments: interpreters, uv's environment, install deadlines."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from plugin_daemon.runtime import PluginSpec, PluginUnavailable
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.commands import run_watched
from plugin_daemon_local.environment import PluginLayout, find_uv
from plugin_daemon_local.envvars import plugin_environment, uv_environment
from plugin_daemon_local.interpreters import InterpreterFinder, probe, requested_version

from tests.runtimes.local.local_runtime_support import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stalling_index() -> AsyncIterator[str]:
    """A loopback "package index" that accepts connections and never answers."""
    held: list[SocketStream] = []

    async def hold(stream: SocketStream) -> None:
        held.append(stream)
        await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, hold)
        yield f"http://127.0.0.1:{port}/simple"
        group.cancel_scope.cancel()
    await listener.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("deadline", ["inactive", "hard"])
async def test_stalled_install_is_killed_with_a_clear_message(
    specs: Callable[[str], PluginSpec], tmp_path: Path, stalling_index: str, deadline: str
) -> None:
    spec = specs("echo_tool")
    limits = {"PYTHON_ENV_INIT_TIMEOUT": 3, "PYTHON_ENV_INIT_HARD_TIMEOUT": 600}
    if deadline == "hard":
        limits = {"PYTHON_ENV_INIT_TIMEOUT": 600, "PYTHON_ENV_INIT_HARD_TIMEOUT": 4}
    settings = make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd", PIP_MIRROR_URL=stalling_index, **limits)
    started = time.monotonic()
    async with LocalRuntime(settings) as runtime:
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(60):
            await runtime.ensure_ready(spec, timeout=60)
    assert time.monotonic() - started < 30
    message = caught.value.message
    assert caught.value.reason == "failed"
    if deadline == "inactive":
        assert "installing dependencies" in message and "no output for 3 s (PYTHON_ENV_INIT_TIMEOUT)" in message
    else:
        assert "was stopped after 4 s (PYTHON_ENV_INIT_HARD_TIMEOUT)" in message
    assert "uv output:" in message
    layout = PluginLayout.for_identifier(settings.working_path, spec.identifier)
    assert not layout.marker.exists()


async def test_run_watched_keeps_output_and_resets_on_activity(tmp_path: Path) -> None:
    script = "import time,sys\nfor i in range(6):\n    print(i, flush=True); time.sleep(0.3)\nsys.exit(4)"
    result = await run_watched(
        [sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), inactivity_timeout=1, hard_timeout=20
    )
    assert result.returncode == 4 and result.killed is None
    assert result.output.split() == ["0", "1", "2", "3", "4", "5"]


async def test_run_watched_kills_the_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (
        "import subprocess,sys,time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    result = await run_watched(
        [sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), inactivity_timeout=1, hard_timeout=20
    )
    assert result.killed == "inactive" and "started" in result.output
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    with anyio.fail_after(5):
        while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
            await anyio.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return "Z"


async def test_finder_finds_a_working_python_312_beyond_broken_shims(monkeypatch: pytest.MonkeyPatch) -> None:
    finder = InterpreterFinder(uv_bin=None)
    found = await finder.find("3.12")
    if not found.matches:
        pytest.skip("no Python 3.12 on this machine")
    assert found.version.startswith("3.12.")
    assert (await probe(found.path)) is not None
    assert "shims" not in found.path  # a shim is resolved to the interpreter it runs


async def test_finder_skips_a_failing_candidate_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "bin" / "python3.11"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken.parent}{os.pathsep}{os.environ['PATH']}")
    found = await InterpreterFinder(uv_bin=find_uv(make_settings(tmp_path))).find("3.11")
    assert found.matches and found.version.startswith("3.11.") and found.path != str(broken)


async def test_finder_falls_back_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        found = await InterpreterFinder(uv_bin=None).find("3.99")
    assert not found.matches and found.path == sys.executable
    assert "no Python 3.99 found" in caplog.text and sys.executable in caplog.text


def test_requested_version() -> None:
    assert requested_version({"meta": {"runner": {"version": "3.11"}}}) == "3.11"
    assert requested_version({"meta": {"runner": {"version": "3.12.4"}}}) == "3.12"
    assert requested_version({"meta": {}}) == "3.12"


def test_uv_environment_keeps_index_configuration_only(tmp_path: Path) -> None:
    source = {
        "PATH": "/usr/bin",
        "HOME": "/home/x",
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_CACHE_DIR": "/elsewhere",
        "PIP_FIND_LINKS": "/opt/wheels",
        "SERVER_KEY": "secret",
        "DB_PASSWORD": "secret",
        "DIFY_INNER_API_KEY": "secret",
    }
    settings = make_settings(tmp_path, HTTP_PROXY="http://127.0.0.1:3128")
    env = uv_environment(settings, tmp_path / ".venv", tmp_path / "cache", source=source)
    assert env["UV_INDEX_URL"] == "https://mirror.example/simple" and env["PIP_FIND_LINKS"] == "/opt/wheels"
    assert env["UV_CACHE_DIR"] == str(tmp_path / "cache") and env["UV_PYTHON_DOWNLOADS"] == "never"
    assert env["VIRTUAL_ENV"] == str(tmp_path / ".venv") and env["HOME"] == "/home/x"
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert not {"SERVER_KEY", "DB_PASSWORD", "DIFY_INNER_API_KEY"} & set(env)


def test_plugin_environment_is_an_allow_list(tmp_path: Path) -> None:
    source = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "UV_INDEX_URL": "x", "SERVER_KEY": "s"}
    env = plugin_environment(make_settings(tmp_path), tmp_path / ".venv", {"HEARTBEAT_INTERVAL": "1"}, source=source)
    assert env == {
        "PATH": f"{tmp_path / '.venv' / 'bin'}{os.pathsep}/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "VIRTUAL_ENV": str(tmp_path / ".venv"),
        "HEARTBEAT_INTERVAL": "1",
        "INSTALL_METHOD": "local",
    }


def test_layout_refuses_unsafe_identifiers(tmp_path: Path) -> None:
    layout = PluginLayout.for_identifier(tmp_path, "a/b:1.0.0@abc123")
    assert layout.workdir == tmp_path / "a" / "b-1.0.0@abc123"
    assert layout.marker == layout.workdir / ".venv" / "dify" / "plugin.json"
    for bad in ("../x/b:1@abc", "a/../../b:1@abc", "a/b:1@../../x", "a/b:1@"):
        with pytest.raises(Exception, match="invalid"):
            PluginLayout.for_identifier(tmp_path, bad)
