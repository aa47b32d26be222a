"""The sandbox's decisions: what it says is in force, ``required`` refusing, stable uids per plugin.

What a confined plugin can and cannot reach is tested with real processes in test_local_isolation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from plugin_daemon.runtime import PluginSpec, PluginUnavailable
from plugin_daemon_local import LocalRuntime, landlock, sandbox
from plugin_daemon_local.commands import run_watched
from plugin_daemon_local.sandbox import Sandbox, parse_uid_range

from tests.runtimes.local.local_runtime_support import make_settings


@pytest.fixture
def no_landlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without Landlock (the only way to have one on this machine)."""
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)


def test_the_log_line_says_what_is_missing(tmp_path: Path, no_landlock: None) -> None:
    box = Sandbox(make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd"))
    assert not box.complete
    assert "missing: " in box.describe() and "Landlock" in box.describe()


def test_off_confines_nothing_and_says_so(tmp_path: Path) -> None:
    box = Sandbox(make_settings(tmp_path, PLUGIN_WORKING_PATH=tmp_path / "cwd", PLUGIN_ISOLATION="off"))
    assert box.describe() == "plugin isolation is off (PLUGIN_ISOLATION=off)"
    confinement = box.confine_plugin("a/b", tmp_path / "cwd" / "a" / "b", tmp_path / "cwd" / "a" / "b" / ".venv")
    assert confinement.uid is None and confinement.ruleset is None and confinement.env == {}


@pytest.mark.anyio
@pytest.mark.slow
async def test_required_refuses_to_start_a_plugin_without_complete_isolation(
    prepared: Callable[[str], PluginSpec], tmp_path: Path, no_landlock: None
) -> None:
    spec = prepared("echo_tool")
    settings = make_settings(tmp_path, PLUGIN_ISOLATION="required")
    async with LocalRuntime(settings) as runtime:
        with anyio.fail_after(60), pytest.raises(PluginUnavailable) as failure:
            await runtime.ensure_ready(spec, timeout=60)
    message = str(failure.value)
    assert "PLUGIN_ISOLATION=required and isolation is incomplete" in message
    assert "Landlock" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="uids per plugin need root")
def test_each_plugin_keeps_its_own_uid(tmp_path: Path) -> None:
    work = Path("/tmp") / f"sandbox-uids-{tmp_path.name}"
    work.mkdir()
    try:
        settings = make_settings(tmp_path, PLUGIN_WORKING_PATH=work, PLUGIN_ISOLATION_UID_RANGE="200000-200001")
        box = Sandbox(settings)
        first, second = box._uid_of("a/one"), box._uid_of("a/two")
        assert {first, second} == {200000, 200001}
        assert Sandbox(settings)._uid_of("a/one") == first  # the same after a restart
        with pytest.raises(sandbox.IsolationUnavailable, match="no free uid"):
            box._uid_of("a/three")
        assert (work / ".isolation-uids.json").stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("text", ["", "0-10", "10-5", "abc", "1-4294967295"])
def test_a_bad_uid_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="PLUGIN_ISOLATION_UID_RANGE"):
        parse_uid_range(text)


@pytest.mark.anyio
@pytest.mark.skipif(os.geteuid() != 0 or landlock.abi_version() < 6, reason="root with Landlock 6")
async def test_an_install_as_root_has_no_capabilities_and_sees_only_its_folders(tmp_path: Path) -> None:
    """What an sdist's build script would run as: root in name only, in the package's folder."""
    work = tmp_path / "cwd"
    folder = work / "author" / "plugin"
    folder.mkdir(parents=True)
    (tmp_path / "secret").write_text("key")
    confinement = Sandbox(make_settings(tmp_path, PLUGIN_WORKING_PATH=work)).confine_install(
        folder, work / ".uv-cache", None
    )
    script = (
        "grep CapEff /proc/self/status; touch inside && echo wrote-inside; "
        f"cat {tmp_path / 'secret'} || echo secret-refused; kill -0 1 || echo kill-refused"
    )
    result = await run_watched(
        ["/bin/sh", "-c", script],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin"},
        inactivity_timeout=10,
        hard_timeout=10,
        confinement=confinement,
    )
    assert "CapEff:\t0000000000000000" in result.output
    assert "wrote-inside" in result.output and (folder / "inside").exists()
    assert "secret-refused" in result.output and "key" not in result.output
    assert "kill-refused" in result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="uids per plugin need root")
def test_links_a_plugin_left_in_its_scratch_are_removed_not_followed(tmp_path: Path) -> None:
    """A plugin owns its scratch: at its next start, HOME and TMPDIR left as links to the daemon's
    folders must not be handed to it (chown follows links)."""
    work = Path("/tmp") / f"sandbox-links-{tmp_path.name}"
    workdir = work / "author" / "plugin"
    workdir.mkdir(parents=True)
    target = work / "daemon-secrets"
    target.mkdir(mode=0o700)
    try:
        box = Sandbox(make_settings(tmp_path, PLUGIN_WORKING_PATH=work, PLUGIN_ISOLATION_UID_RANGE="200010-200010"))
        assert box.uids
        confinement = box.confine_plugin("author/plugin", workdir, workdir / ".venv")
        confinement.close()
        scratch = Path(confinement.env["HOME"]).parent
        for name in ("home", "tmp"):
            shutil.rmtree(scratch / name)
            (scratch / name).symlink_to(target)
        box.confine_plugin("author/plugin", workdir, workdir / ".venv").close()
        assert target.stat().st_uid == 0
        for name in ("home", "tmp"):
            assert not (scratch / name).is_symlink() and (scratch / name).stat().st_uid == 200010
    finally:
        shutil.rmtree(work, ignore_errors=True)
