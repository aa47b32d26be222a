"""The local runtime registers itself through the ``plugin_daemon`` entry point, like a third party."""

from __future__ import annotations

from types import SimpleNamespace

from plugin_daemon.plugins import load_extensions
from plugin_daemon_local import LocalRuntime

from tests.runtimes.local.local_runtime_support import make_settings


def test_entry_point_registers_local(tmp_path) -> None:
    factories = load_extensions().runtime_factories()
    assert "local" in factories
    runtime = factories["local"](SimpleNamespace(settings=make_settings(tmp_path)))  # type: ignore[arg-type]
    assert isinstance(runtime, LocalRuntime) and runtime.name == "local"
    assert runtime.health() == {"runtime": "local", "plugins": {}, "idle_timeout": 300.0}
