"""Hygiene of the extension surface: documented hooks, misspelled hooks caught, settings documented."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pluggy
import pytest
from plugin_daemon import hookspecs
from plugin_daemon.config import Settings
from plugin_daemon.hookspecs import hookimpl
from plugin_daemon.plugins import ExtensionManager
from plugin_daemon.runtime_memory import MemoryRuntime

HOOKS = [name for name in dir(hookspecs) if name.startswith("plugin_daemon_")]
README = (Path(__file__).parents[2] / "README.md").read_text()


def test_there_are_hooks() -> None:
    assert set(HOOKS) >= {
        "plugin_daemon_register_runtimes",
        "plugin_daemon_register_routes",
        "plugin_daemon_register_services",
        "plugin_daemon_register_commands",
    }


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc.splitlines()[0]) > 20, f"{name} needs a one-line purpose"
    assert ":param" in doc and ":return:" in doc and "Since" in doc, f"{name} must document params, return, since"


def test_misspelled_hook_is_refused() -> None:
    module = types.ModuleType("typo_extension")

    @hookimpl
    def plugin_daemon_register_runtime(register):  # type: ignore[no-untyped-def]  # missing "s"
        return None

    module.plugin_daemon_register_runtime = plugin_daemon_register_runtime  # type: ignore[attr-defined]
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook"):
        ExtensionManager().register(module, "typo_extension")


def test_in_process_registration_and_blocking() -> None:
    module = types.ModuleType("mine")

    @hookimpl
    def plugin_daemon_register_runtimes(register):  # type: ignore[no-untyped-def]
        register("mine", lambda daemon: MemoryRuntime())

    module.plugin_daemon_register_runtimes = plugin_daemon_register_runtimes  # type: ignore[attr-defined]
    manager = ExtensionManager()
    manager.register(module, "mine")
    assert "mine" in manager.runtime_factories()
    blocked = ExtensionManager(blocked={"mine"})
    blocked.register(module, "mine")
    assert "mine" not in blocked.runtime_factories()


def test_two_runtimes_with_one_name_are_refused() -> None:
    manager = ExtensionManager()
    for name in ("a", "b"):
        module = types.ModuleType(name)

        @hookimpl
        def plugin_daemon_register_runtimes(register):  # type: ignore[no-untyped-def]
            register("same", lambda daemon: MemoryRuntime())

        module.plugin_daemon_register_runtimes = plugin_daemon_register_runtimes  # type: ignore[attr-defined]
        manager.register(module, name)
    with pytest.raises(ValueError, match="same"):
        manager.runtime_factories()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert re.search(rf"`{name}`", README), f"README's configuration table lacks {name}"
