"""Registers the debug runtime with plugin-daemon (entry point ``plugin_daemon: debug``).

The runtime's name is ``remote``, the installation ``runtime_type`` the Go daemon uses for
debugging plugins; its routes are the debugging key, logs and traces under the tenant.
"""

from __future__ import annotations

import click
from plugin_daemon.hookspecs import RegisterRoute, RegisterRuntime, hookimpl


@hookimpl
def plugin_daemon_register_runtimes(register: RegisterRuntime) -> None:
    from .runtime import DebugRuntime

    register(DebugRuntime.name, DebugRuntime)


@hookimpl
def plugin_daemon_register_routes(register: RegisterRoute) -> None:
    from .routes import routes

    for route in routes():
        register(route)


@hookimpl
def plugin_daemon_register_commands(cli: click.Group) -> None:
    from .dev_cli import dev

    cli.add_command(dev)
