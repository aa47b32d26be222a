"""Entry point of the serverless runtime (group ``plugin_daemon``): the runtime, the backwards
transaction route and the ``connector`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugin_daemon.hookspecs import RegisterRoute, RegisterRuntime, hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def plugin_daemon_register_runtimes(register: RegisterRuntime) -> None:
    from .runtime import NAME, ServerlessRuntime

    register(NAME, ServerlessRuntime)


@hookimpl
def plugin_daemon_register_routes(register: RegisterRoute) -> None:
    from starlette.routing import Route

    from .transaction import PATH, transaction

    register(Route(PATH, transaction, methods=["POST"]))


@hookimpl
def plugin_daemon_register_commands(cli: click.Group) -> None:
    from .connector.cli import connector

    cli.add_command(connector)
