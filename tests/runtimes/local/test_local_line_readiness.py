"""A line/1 plugin is ready at its first heartbeat_ack, not before: one that never answers, or whose
entrypoint cannot start, fails its launch with a message that says why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from plugin_daemon.runtime import PluginUnavailable
from plugin_daemon_local import LocalRuntime

from tests.runtimes.local.local_runtime_support import make_settings, package_spec

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[3] / "contrib" / "line-plugins" / "echo_sh"


def plugin_with(tmp_path: Path, main: str, entrypoint: str = "bash main.sh") -> Path:
    folder = tmp_path / "echo_sh"
    shutil.copytree(EXAMPLE, folder)
    (folder / "main.sh").write_text(main)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("entrypoint: bash main.sh", f"entrypoint: {entrypoint}"))
    return folder


async def test_a_plugin_that_never_acks_is_not_ready(tmp_path: Path) -> None:
    silent = 'echo "listening, never answering" >&2\nwhile IFS= read -r line; do :; done\n'
    spec = package_spec(plugin_with(tmp_path, silent), tmp_path)
    async with LocalRuntime(make_settings(tmp_path / "home", PLUGIN_READY_TIMEOUT=1.5)) as runtime:
        with pytest.raises(PluginUnavailable) as caught:
            await runtime.ensure_ready(spec, timeout=30)
    assert "sent no heartbeat within 1.5 s" in caught.value.message
    assert "listening, never answering" in caught.value.message


async def test_an_entrypoint_that_cannot_start_says_so(tmp_path: Path) -> None:
    spec = package_spec(plugin_with(tmp_path, "", entrypoint="no-such-interpreter main.sh"), tmp_path)
    async with LocalRuntime(make_settings(tmp_path / "home")) as runtime:
        with pytest.raises(PluginUnavailable) as caught:
            await runtime.ensure_ready(spec, timeout=30)
    assert "cannot start" in caught.value.message and "no-such-interpreter" in caught.value.message


async def test_the_first_ack_makes_it_ready(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    spec = package_spec(plugin_with(tmp_path, (EXAMPLE / "main.sh").read_text()), tmp_path)
    async with LocalRuntime(make_settings(tmp_path / "home")) as runtime:
        await runtime.ensure_ready(spec, timeout=30)
        assert runtime.health()["plugins"][spec.identifier]["pid"]
