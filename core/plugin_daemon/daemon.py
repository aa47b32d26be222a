"""The daemon's object graph: settings, extensions, database, managers, runtimes, sessions."""

from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from plugin_daemon.backwards import BackwardsInvoker
from plugin_daemon.backwards.storage import place_value
from plugin_daemon.config import Settings
from plugin_daemon.control_panel import ControlPanel
from plugin_daemon.endpoints import EndpointService
from plugin_daemon.hardening import secure_data_folder
from plugin_daemon.installer import Installer
from plugin_daemon.logbook import LogBook
from plugin_daemon.manager import PluginManager
from plugin_daemon.plugin_logs import DEBUG_RUNTIME, PluginLogFeed
from plugin_daemon.plugins import ExtensionManager, load_extensions
from plugin_daemon.sessions import SessionManager
from plugin_daemon.shutdown import Shutdown
from plugin_daemon.store.database import Database, EngineOptions

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import TaskGroup

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> Database:
    """The database the settings name (DATABASE_URL, or Go's DB_* settings), its schema in place."""
    return Database(
        settings.database_url,
        options=EngineOptions(
            max_open=settings.DB_MAX_OPEN_CONNS,
            max_idle=settings.DB_MAX_IDLE_CONNS,
            max_lifetime=settings.DB_CONN_MAX_LIFETIME,
            default_database=settings.DB_DEFAULT_DATABASE,
            prepared_statements=settings.DB_TYPE != "pgbouncer",
        ),
        storage_writer=functools.partial(place_value, settings.persistence_path),
    )


class Daemon:
    """Everything one daemon process holds. Built once; started by :meth:`running`."""

    def __init__(self, settings: Settings, extensions: ExtensionManager | None = None) -> None:
        self.settings = settings
        settings.ensure_directories()
        self.extensions = extensions or load_extensions(settings.disabled_extensions)
        self.extensions.register_codecs()
        self.database = open_database(settings)
        secure_data_folder(settings)  # after the database exists: its file is tightened too
        self.manager = PluginManager(settings, self.database)
        self.sessions = SessionManager(metrics=settings.PROMETHEUS_ENABLED)
        #: plugins' live logs (/debugging/logs): the debug runtime's, and what plugin_logs feeds in
        self.logbook = LogBook()
        self.plugin_logs = PluginLogFeed(self.logbook, self.sessions, self._is_debugging)
        #: calls in flight, and the SIGTERM that ends them (plugin_daemon.shutdown)
        self.shutdown = Shutdown()
        self.backwards = BackwardsInvoker(settings, self.database)
        self.installer = Installer(self)
        self.control_panel = ControlPanel(self, self.extensions.runtime_factories())
        self.endpoints = EndpointService(self)
        self.services = {name: factory(self) for name, factory in self.extensions.service_factories().items()}
        self._task_group: TaskGroup | None = None
        #: anything an extension wants to share with its routes (keyed by extension name)
        self.state: dict[str, Any] = {}

    @property
    def task_group(self) -> TaskGroup:
        if self._task_group is None:
            raise RuntimeError("the daemon is not running")
        return self._task_group

    async def retire(self, identifier: str, runtime_type: str) -> None:
        """Stop a plugin no tenant has installed any more (after an uninstall or an upgrade), once
        the calls it is answering have ended: at most PLUGIN_MAX_EXECUTION_TIMEOUT, as the Go daemon."""
        if not await self.sessions.drained(identifier, self.settings.PLUGIN_MAX_EXECUTION_TIMEOUT):
            log.warning("stopping %s with calls still in flight (PLUGIN_MAX_EXECUTION_TIMEOUT)", identifier)
        if identifier in await anyio.to_thread.run_sync(self.manager.installed_identifiers):
            return  # installed again meanwhile
        await self.control_panel.stop(identifier, runtime_type)
        await self.discard_unused(identifier, runtime_type)

    async def discard_unused(self, identifier: str, runtime_type: str) -> None:
        """Remove the extracted folder and environment of ``identifier`` when no tenant has it
        installed and no install of it is under way (after an uninstall, an upgrade, a failed install)."""
        if self.installer.preparing(identifier):
            return
        if identifier in await anyio.to_thread.run_sync(self.manager.installed_identifiers):
            return
        await self.control_panel.discard(identifier, runtime_type)

    def _is_debugging(self, plugin_id: str) -> bool:
        """Whether a debugging connection serves ``plugin_id`` (its log is kept by the debug runtime)."""
        runtime = self.control_panel.runtimes.get(DEBUG_RUNTIME)
        return runtime is not None and plugin_id in runtime.instance_states()

    @asynccontextmanager
    async def running(self, *, relaunch: bool = True) -> AsyncIterator[Daemon]:
        """Start runtimes and services in one task group; stop everything on exit."""
        interrupted = await anyio.to_thread.run_sync(self.installer.fail_interrupted)
        if interrupted:
            log.warning("%d install task(s) were interrupted by the last shutdown and are marked failed", interrupted)
        leftovers = await anyio.to_thread.run_sync(self.manager.remove_interrupted_uploads)
        if leftovers:
            log.warning("removed %d temporary file(s) of uploads interrupted by the last stop", leftovers)
        copied = await anyio.to_thread.run_sync(self.manager.keep_installed_copies)
        if copied:
            log.info(
                "%d installed plugin(s) got their copy under PLUGIN_INSTALLED_PATH, as the Go daemon keeps them", copied
            )
        self.plugin_logs.attach()
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                for runtime in self.control_panel.runtimes.values():
                    await group.start(_serve_runtime, runtime)
                for name, service in self.services.items():
                    await group.start(_run_service, name, service)
                if relaunch:
                    group.start_soon(self.control_panel.relaunch_installed)
                try:
                    yield self
                finally:
                    group.cancel_scope.cancel()
        finally:
            self._task_group = None
            self.plugin_logs.detach()
            with anyio.CancelScope(shield=True):
                await self.control_panel.aclose()
                await self.backwards.aclose()
            self.database.dispose()


async def _serve_runtime(runtime: Any, *, task_status: Any) -> None:
    await runtime.serve(task_status=task_status)


async def _run_service(name: str, service: Any, *, task_status: Any) -> None:
    log.info("starting service %s", name)
    await service(task_status=task_status)
