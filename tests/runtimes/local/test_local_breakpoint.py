"""A stray ``breakpoint()`` in a local plugin: without a debugger attached, the call still answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from plugin_daemon.runtime import EventKind, PluginSpec
from plugin_daemon_local import LocalRuntime

from tests.runtimes.local.local_runtime_support import invoke, make_settings, texts

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_stray_breakpoint_does_not_hang_the_plugin(prepared: Callable[[str], PluginSpec], tmp_path: Path) -> None:
    spec = prepared("echo_tool")
    async with LocalRuntime(make_settings(tmp_path)) as runtime:
        await runtime.ensure_ready(spec, timeout=60)
        pid = runtime.health()["plugins"][spec.identifier]["pid"]
        # pdb would write "(Pdb)" to stdout (the protocol stream) and wait on stdin (the request pipe).
        events = await invoke(runtime, spec, "halt", timeout=15)
        assert [e.kind for e in events] == [EventKind.STREAM, EventKind.END]
        assert texts(events) == ["after breakpoint"]
        # The process is the same one and keeps answering.
        assert texts(await invoke(runtime, spec, "echo", {"text": "still here"})) == ["still here"]
        assert runtime.health()["plugins"][spec.identifier]["pid"] == pid
