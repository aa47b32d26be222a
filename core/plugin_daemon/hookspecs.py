"""The extension surface of plugin-daemon: every hook an extension may implement.

An extension is a module registered under the entry-point group ``plugin_daemon``::

    [project.entry-points.plugin_daemon]
    my_runtime = "my_package.registration"

whose module defines functions named after the hooks below, decorated with
``plugin_daemon.hookimpl``. The built-in runtimes register themselves exactly this way.

Hooks only *register* things, synchronously; the registered objects do the async work.
Every hook is available since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click
    from starlette.routing import BaseRoute

    from plugin_daemon.protocol.codecs import CodecFactory
    from plugin_daemon.runtime import RuntimeFactory
    from plugin_daemon.services import ServiceFactory

PROJECT_NAME = "plugin_daemon"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``register(name, factory)``: adds a runtime; ``factory(daemon)`` builds it once per daemon.
RegisterRuntime = Callable[[str, "RuntimeFactory"], None]
#: ``register(protocol, factory)``: adds a wire codec; ``factory()`` builds one per plugin connection.
RegisterCodec = Callable[[str, "CodecFactory"], None]
#: ``register(route)``: adds a Starlette route (or Mount) to the daemon's HTTP app.
RegisterRoute = Callable[["BaseRoute"], None]
#: ``register(name, factory)``: adds a background service started by the app's lifespan.
RegisterService = Callable[[str, "ServiceFactory"], None]


@hookspec
def plugin_daemon_register_runtimes(register: RegisterRuntime) -> None:
    """Register runtimes: places where installed plugins run.

    :param register: call ``register(name, factory)`` once per runtime. ``name`` is the
        installation's ``runtime_type`` (``local``, ``remote``, ``serverless``, or your own);
        ``factory(daemon)`` returns a :class:`plugin_daemon.runtime.Runtime`.
    :return: nothing; the return value is ignored.

    Since 0.1.0.
    """


@hookspec
def plugin_daemon_register_codecs(register: RegisterCodec) -> None:
    """Register wire codecs: protocols a plugin process may speak instead of the SDK's.

    :param register: call ``register(protocol, factory)`` once per codec. ``protocol`` is the
        value plugins name in ``meta.runner.protocol`` (``line/1`` is built in); ``factory()``
        returns a :class:`plugin_daemon.protocol.codecs.LineCodec` for one connection.
    :return: nothing; the return value is ignored.

    Since 0.1.0.
    """


@hookspec
def plugin_daemon_register_routes(register: RegisterRoute) -> None:
    """Register extra HTTP routes on the daemon's app (for example a runtime's own callbacks).

    Routes under ``/plugin/`` are behind the ``X-Api-Key`` check like the built-in ones; a
    handler reaches the daemon through ``request.app.state.daemon``.

    :param register: call ``register(route)`` with a Starlette ``Route``, ``Mount`` or
        ``WebSocketRoute``.
    :return: nothing.

    Since 0.1.0.
    """


@hookspec
def plugin_daemon_register_services(register: RegisterService) -> None:
    """Register background services that live as long as the daemon (listeners, watchdogs).

    :param register: call ``register(name, factory)``; ``factory(daemon)`` returns an async
        callable ``run(*, task_status)`` that the lifespan starts in its task group. It must
        call ``task_status.started()`` once it is ready and run until cancelled.
    :return: nothing.

    Since 0.1.0.
    """


@hookspec
def plugin_daemon_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``plugin-daemon`` command line.

    :param cli: the root ``click.Group``; call ``cli.add_command(command)``.
    :return: nothing.

    Since 0.1.0.
    """
