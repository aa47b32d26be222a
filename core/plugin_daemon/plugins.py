"""Loading extensions: entry points of the group ``plugin_daemon``, through pluggy.

The core ships no runtime and imports none: the built-in runtimes are found here exactly like a
third party's. An operator can block an extension by its entry-point name
(``DISABLED_EXTENSIONS=serverless,...``) and list what was loaded (``plugin-daemon extensions``,
``GET /plugin/extensions``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import pluggy

from plugin_daemon import hookspecs

if TYPE_CHECKING:
    import click
    from starlette.routing import BaseRoute

    from plugin_daemon.runtime import RuntimeFactory
    from plugin_daemon.services import ServiceFactory

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "plugin_daemon"


@dataclass(frozen=True)
class Extension:
    """One entry point of the group, loaded or blocked."""

    name: str
    module: str
    distribution: str
    version: str
    blocked: bool
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "blocked": self.blocked,
            "error": self.error,
        }


class ExtensionManager:
    """The pluggy manager plus what the core needs to know about what it loaded."""

    def __init__(self, blocked: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.blocked = set(blocked)
        self.extensions: list[Extension] = []

    def load_entry_points(self) -> None:
        """Import and register every extension of the group, except blocked ones."""
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            distribution = entry_point.dist.name if entry_point.dist else ""
            version = entry_point.dist.version if entry_point.dist else ""
            if entry_point.name in self.blocked:
                self.pm.set_blocked(entry_point.name)
                self.extensions.append(
                    Extension(entry_point.name, entry_point.value, distribution, version, blocked=True)
                )
                continue
            try:
                module = entry_point.load()
            except Exception as exc:  # a broken extension must not take the daemon down
                log.error("extension %s (%s) failed to load: %s", entry_point.name, entry_point.value, exc)
                self.extensions.append(
                    Extension(entry_point.name, entry_point.value, distribution, version, False, str(exc))
                )
                continue
            self.pm.register(module, name=entry_point.name)
            self.extensions.append(Extension(entry_point.name, entry_point.value, distribution, version, False))
        self.pm.check_pending()

    def register(self, module: object, name: str) -> None:
        """Register an in-process extension (tests, embedding)."""
        if name in self.blocked:
            return
        self.pm.register(module, name=name)
        self.extensions.append(Extension(name, getattr(module, "__name__", repr(module)), "", "", False))
        self.pm.check_pending()

    # --- collecting what the hooks register -------------------------------------------
    def runtime_factories(self) -> dict[str, RuntimeFactory]:
        factories: dict[str, RuntimeFactory] = {}

        def register(name: str, factory: RuntimeFactory) -> None:
            if name in factories:
                raise ValueError(f"two extensions register a runtime named {name!r}")
            factories[name] = factory

        self.pm.hook.plugin_daemon_register_runtimes(register=register)
        return factories

    def register_codecs(self) -> None:
        """Add the codecs extensions register to the protocol layer's table."""
        from plugin_daemon.protocol.codecs import register_codec

        self.pm.hook.plugin_daemon_register_codecs(register=register_codec)

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        self.pm.hook.plugin_daemon_register_routes(register=routes.append)
        return routes

    def service_factories(self) -> dict[str, ServiceFactory]:
        services: dict[str, ServiceFactory] = {}

        def register(name: str, factory: ServiceFactory) -> None:
            services[name] = factory

        self.pm.hook.plugin_daemon_register_services(register=register)
        return services

    def add_commands(self, cli: click.Group) -> None:
        self.pm.hook.plugin_daemon_register_commands(cli=cli)

    def registrations(self, name: str) -> dict[str, list[str]]:
        """What the extension ``name`` registers: runtimes, codecs, routes, services and commands, by name."""
        import click

        found: dict[str, list[str]] = {"runtimes": [], "codecs": [], "routes": [], "services": [], "commands": []}
        group = click.Group()
        calls: dict[str, dict[str, object]] = {
            "plugin_daemon_register_runtimes": {"register": lambda key, _factory: found["runtimes"].append(key)},
            "plugin_daemon_register_codecs": {"register": lambda key, _factory: found["codecs"].append(key)},
            "plugin_daemon_register_routes": {
                "register": lambda route: found["routes"].append(str(getattr(route, "path", route)))
            },
            "plugin_daemon_register_services": {"register": lambda key, _factory: found["services"].append(key)},
            "plugin_daemon_register_commands": {"cli": group},
        }
        for hook_name, arguments in calls.items():
            for implementation in getattr(self.pm.hook, hook_name).get_hookimpls():
                if implementation.plugin_name == name:
                    implementation.function(**arguments)
        found["commands"] = sorted(group.commands)
        return found


def load_extensions(blocked: Iterable[str] = ()) -> ExtensionManager:
    manager = ExtensionManager(blocked)
    manager.load_entry_points()
    return manager
