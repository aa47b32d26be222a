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
from packaging.version import Version
from plugin_daemon.runtime import PluginSpec, PluginUnavailable
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.commands import run_watched
from plugin_daemon_local.environment import PluginLayout, find_uv, read_marker
from plugin_daemon_local.envvars import extra_plugin_environment, plugin_environment, uv_environment
from plugin_daemon_local.interpreters import Interpreter, InterpreterFinder, probe, requested_version
from plugin_daemon_local.python_choice import NoSuitablePython, PythonChoice, choose_python, read_requirement

from tests.runtimes.local.local_runtime_support import BUILD_TIMEOUT, invoke, make_settings, texts

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
    downloads = make_settings(tmp_path, UV_PYTHON_DOWNLOADS="automatic")
    assert uv_environment(downloads, tmp_path / ".venv", tmp_path / "cache", source=source)["UV_PYTHON_DOWNLOADS"] == (
        "automatic"
    )


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
        "PYTHONBREAKPOINT": "0",
    }
    attached = plugin_environment(make_settings(tmp_path), tmp_path / ".venv", source=source, debugger=True)
    assert "PYTHONBREAKPOINT" not in attached


def test_extra_plugin_environment_copies_names_sets_pairs_and_refuses_secrets(tmp_path: Path) -> None:
    source = {"HF_HOME": "/models", "OPENAI_API_KEY": "daemon-secret", "SERVER_KEY": "s"}
    setting = 'HF_HOME, NOT_SET REGION="eu west,2" OPENAI_API_KEY=for-plugins'
    env = extra_plugin_environment(make_settings(tmp_path, PLUGIN_EXTRA_ENV=setting), source)
    assert env == {"HF_HOME": "/models", "REGION": "eu west,2", "OPENAI_API_KEY": "for-plugins"}
    refused = {
        "SERVER_KEY": "one of the daemon's secrets",
        "DIFY_INNER_API_KEY=x": "one of the daemon's secrets",
        "DB_PASSWORD": "one of the daemon's secrets",
        "DATABASE_URL": "one of the daemon's secrets",
        "AWS_SECRET_KEY": "looks like a credential",
        "OPENAI_API_KEY": "write OPENAI_API_KEY=value",
        "PATH=/tmp": "set by the local runtime itself",
        "1BAD": "is not NAME or NAME=value",
    }
    for item, reason in refused.items():
        with pytest.raises(ValueError, match="PLUGIN_EXTRA_ENV") as caught:
            extra_plugin_environment(make_settings(tmp_path, PLUGIN_EXTRA_ENV=f"HF_HOME {item}"), source)
        assert reason in str(caught.value), item
    assert extra_plugin_environment(make_settings(tmp_path, PLUGIN_EXTRA_ENV="TIKTOKEN_CACHE_DIR"), {}) == {}


def test_layout_refuses_unsafe_identifiers(tmp_path: Path) -> None:
    layout = PluginLayout.for_identifier(tmp_path, "a/b:1.0.0@abc123")
    assert layout.workdir == tmp_path / "a" / "b-1.0.0@abc123"
    assert layout.marker == layout.workdir / ".venv" / "dify" / "plugin.json"
    for bad in ("../x/b:1@abc", "a/../../b:1@abc", "a/b:1@../../x", "a/b:1@"):
        with pytest.raises(Exception, match="invalid"):
            PluginLayout.for_identifier(tmp_path, bad)


# --- the interpreter a plugin is built with: its own requires-python decides ---------------------


async def _every_python() -> list[Interpreter]:
    return await InterpreterFinder(uv_bin=None).every()


def _only_these_pythons(monkeypatch: pytest.MonkeyPatch, home: Path, pythons: list[Interpreter]) -> None:
    """Let discovery see exactly ``pythons``: a PATH of links to them, no pyenv, no uv-managed ones."""
    folder = home / "bin"
    folder.mkdir(parents=True)
    for interpreter in pythons:
        (folder / f"python{interpreter.short_version}").symlink_to(interpreter.path)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("HOME", str(home))
    for name in ("PYENV_ROOT", "XDG_DATA_HOME", "UV_PYTHON_INSTALL_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_requirement_comes_from_pyproject_and_uv_lock(tmp_path: Path) -> None:
    assert read_requirement(tmp_path) is None  # requirements.txt plugins declare none
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nrequires-python = ">=3.11"\n')
    requirement = read_requirement(tmp_path)
    assert requirement is not None and str(requirement) == "requires-python >=3.11 (pyproject.toml)"
    (tmp_path / "uv.lock").write_text('version = 1\nrequires-python = ">=3.12, <3.14"\n')
    requirement = read_requirement(tmp_path)
    assert requirement is not None and requirement.source == "pyproject.toml and uv.lock"
    assert not requirement.allows("3.11.7") and requirement.allows("3.12.1") and not requirement.allows("3.14.0")


async def test_choice_prefers_the_manifest_then_312_then_the_highest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_minor = {interpreter.short_version: interpreter for interpreter in reversed(await _every_python())}
    if not {"3.11", "3.12", "3.13"} <= set(by_minor):
        pytest.skip("needs Pythons 3.11, 3.12 and 3.13 on this machine")
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "pyproject.toml").write_text('[project]\nname = "p"\nrequires-python = ">=3.12"\n')
    _only_these_pythons(monkeypatch, tmp_path / "home", [by_minor[v] for v in ("3.11", "3.12", "3.13")])

    async def choose(version: str) -> PythonChoice:
        declaration = {"meta": {"runner": {"version": version}}}
        return await choose_python(InterpreterFinder(uv_bin=None), declaration, plugin, downloads="never")

    named = await choose("3.13")
    assert named.interpreter is not None and named.interpreter.short_version == "3.13"
    assert named.reason == "meta.runner.version 3.13 satisfies requires-python >=3.12 (pyproject.toml)"
    old = await choose("3.10")
    assert old.interpreter is not None and old.interpreter.short_version == "3.12"
    assert old.reason.startswith("meta.runner.version 3.10 does not satisfy requires-python >=3.12 (pyproject.toml)")
    assert "3.12 is preferred" in old.reason
    (plugin / "pyproject.toml").write_text('[project]\nname = "p"\nrequires-python = ">=3.13"\n')
    highest = await choose("3.11")
    assert highest.interpreter is not None and highest.interpreter.short_version == "3.13"
    assert "the highest compatible one" in highest.reason
    (plugin / "pyproject.toml").write_text('[project]\nname = "p"\nrequires-python = ">=3.14"\n')
    uv_provides = await choose_python(
        InterpreterFinder(uv_bin=None), {"meta": {"runner": {"version": "3.12"}}}, plugin, downloads="automatic"
    )
    assert uv_provides.interpreter is None and uv_provides.python_argument == ">=3.14"
    assert "UV_PYTHON_DOWNLOADS=automatic" in uv_provides.reason


async def test_a_python_installed_after_a_refusal_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_minor = {interpreter.short_version: interpreter for interpreter in reversed(await _every_python())}
    if not {"3.11", "3.12"} <= set(by_minor):
        pytest.skip("needs Pythons 3.11 and 3.12 on this machine")
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "pyproject.toml").write_text('[project]\nname = "p"\nrequires-python = ">=3.12"\n')
    _only_these_pythons(monkeypatch, tmp_path / "home", [by_minor["3.11"]])
    finder = InterpreterFinder(uv_bin=None)
    declaration = {"meta": {"runner": {"version": "3.12"}}}
    with pytest.raises(NoSuitablePython, match=r"interpreters found: 3\.11\."):
        await choose_python(finder, declaration, plugin, downloads="never")
    (tmp_path / "home" / "bin" / "python3.12").symlink_to(by_minor["3.12"].path)  # the operator installs one
    choice = await choose_python(finder, declaration, plugin, downloads="never")
    assert choice.interpreter is not None and choice.interpreter.short_version == "3.12"


@pytest.mark.slow
async def test_a_manifest_python_the_plugin_refuses_is_replaced_by_a_compatible_one(
    specs: Callable[[str], PluginSpec], tmp_path: Path
) -> None:
    """Like models/nomic: meta.runner.version 3.10, requires-python >=3.12 (uv would refuse 3.10)."""
    compatible = [interpreter for interpreter in await _every_python() if interpreter.sort_key >= Version("3.12")]
    if not compatible:
        pytest.skip("no Python 3.12 or later on this machine")
    spec = specs("runner_mismatch")
    settings = make_settings(tmp_path)
    async with LocalRuntime(settings) as runtime:
        await runtime.ensure_ready(spec, timeout=BUILD_TIMEOUT)
        assert texts(await invoke(runtime, spec, "echo", {"text": "built on a compatible Python"})) == [
            "built on a compatible Python"
        ]
    marker = read_marker(PluginLayout.for_identifier(settings.working_path, spec.identifier))
    assert marker is not None and Version(marker["python"]) >= Version("3.12")
    if any(interpreter.short_version == "3.12" for interpreter in compatible):
        assert marker["python"].startswith("3.12.")
    assert (
        "meta.runner.version 3.10 does not satisfy requires-python >=3.12 (pyproject.toml)" in marker["python_reason"]
    )


@pytest.mark.slow
async def test_no_compatible_python_is_an_install_error_naming_both_sides(
    specs: Callable[[str], PluginSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = [interpreter for interpreter in await _every_python() if interpreter.sort_key < Version("3.12")][:1]
    spec = specs("runner_mismatch")
    settings = make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd")
    _only_these_pythons(monkeypatch, tmp_path / "home", older)
    async with LocalRuntime(settings) as runtime:
        with pytest.raises(PluginUnavailable) as caught, anyio.fail_after(60):
            await runtime.ensure_ready(spec, timeout=60)
    message = caught.value.message
    assert caught.value.reason == "failed"
    assert "no Python on this machine satisfies the plugin's requires-python >=3.12 (pyproject.toml)" in message
    assert "its manifest asks for 3.10" in message
    found = f"interpreters found: {older[0].version} (" if older else "interpreters found: none"
    assert found in message and "UV_PYTHON_DOWNLOADS=automatic" in message
    assert not PluginLayout.for_identifier(settings.working_path, spec.identifier).venv.exists()
