"""Registers the local runtime with plugin-daemon (entry point ``plugin_daemon: local``)."""

from __future__ import annotations

from plugin_daemon.hookspecs import RegisterRuntime, hookimpl


@hookimpl
def plugin_daemon_register_runtimes(register: RegisterRuntime) -> None:
    from .runtime import LocalRuntime

    register("local", lambda daemon: LocalRuntime(daemon.settings))
