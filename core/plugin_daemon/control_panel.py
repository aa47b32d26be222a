"""The control panel: which runtime runs an installation, and getting it ready to answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from plugin_daemon.errors import DaemonError, InternalError
from plugin_daemon.runtime import InstanceState, PluginSpec, PluginUnavailable, Runtime

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon
    from plugin_daemon.runtime import RuntimeFactory

log = logging.getLogger(__name__)


class ControlPanel:
    def __init__(self, daemon: Daemon, factories: dict[str, RuntimeFactory]) -> None:
        self.daemon = daemon
        self.runtimes: dict[str, Runtime] = {name: factory(daemon) for name, factory in factories.items()}

    def runtime(self, runtime_type: str) -> Runtime:
        try:
            return self.runtimes[runtime_type]
        except KeyError:
            loaded = ", ".join(sorted(self.runtimes)) or "none"
            raise InternalError(
                f"runtime {runtime_type!r} is not loaded (loaded runtimes: {loaded}); "
                "install its package or unblock its extension"
            ) from None

    def default_runtime_type(self) -> str:
        return self.daemon.settings.PLATFORM

    async def spec(self, identifier: str) -> PluginSpec:
        manager = self.daemon.manager
        cached = manager.cached_spec(identifier)
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(manager.spec, identifier)

    async def ready_runtime(self, identifier: str, runtime_type: str) -> Runtime:
        """The runtime of an installation once its instance can answer (waits for a launch)."""
        runtime = self.runtime(runtime_type)
        if runtime.state(identifier) is InstanceState.READY:
            return runtime
        spec = await self.spec(identifier)
        shutdown = self.daemon.shutdown
        with anyio.CancelScope() as waiting:
            shutdown.track(waiting)  # a shutdown past its grace period ends the wait with its error
            try:
                await runtime.ensure_ready(spec, timeout=self.daemon.settings.PLUGIN_READY_TIMEOUT)
            except PluginUnavailable as exc:
                raise unavailable_error(identifier, exc) from exc
            finally:
                shutdown.untrack(waiting)
        if waiting.cancelled_caught:
            raise shutdown.error()
        return runtime

    async def relaunch_installed(self) -> None:
        """At start: get the installed plugins of the relaunchable runtimes running again (those the
        runtime starts with the daemon; the others start on their first call)."""
        identifiers_by_type = {
            runtime_type: await anyio.to_thread.run_sync(self.daemon.manager.installed_identifiers, runtime_type)
            for runtime_type in self.runtimes
        }

        async def launch(runtime: Runtime, identifier: str) -> None:
            try:
                spec = await self.spec(identifier)
                await runtime.ensure_ready(spec, timeout=self.daemon.settings.install_timeout_seconds)
                log.info("plugin %s is running again", identifier)
            except (PluginUnavailable, DaemonError) as exc:
                log.error("plugin %s could not be started again: %s", identifier, exc)

        async with anyio.create_task_group() as group:
            for runtime_type, identifiers in identifiers_by_type.items():
                runtime = self.runtimes[runtime_type]
                if not getattr(runtime, "relaunch_on_start", True):
                    continue
                for identifier in identifiers:
                    if runtime.starts_with_daemon(identifier):
                        group.start_soon(launch, runtime, identifier)

    async def stop(self, identifier: str, runtime_type: str) -> None:
        runtime = self.runtimes.get(runtime_type)
        if runtime is not None:
            await runtime.stop(identifier)

    async def discard(self, identifier: str, runtime_type: str) -> None:
        runtime = self.runtimes.get(runtime_type)
        if runtime is not None:
            try:
                await runtime.discard(identifier)
            except Exception:  # a folder left behind costs disk, never a call
                log.exception("removing the folders of %s failed", identifier)

    async def aclose(self) -> None:
        for runtime in self.runtimes.values():
            try:
                await runtime.aclose()
            except Exception:
                log.exception("runtime %s failed to close", runtime.name)


_UNAVAILABLE_HINTS = {
    InstanceState.STARTING.value: "it is still starting; try again in a moment",
    InstanceState.RESTARTING.value: "it crashed and is being restarted",
    InstanceState.FAILED.value: "it failed to start; reinstall it or read the daemon log",
}


def unavailable_error(identifier: str, exc: PluginUnavailable) -> InternalError:
    hint = _UNAVAILABLE_HINTS.get(exc.reason, "")
    message = f"plugin {identifier} is not available ({exc.reason}): {exc.message}"
    if hint:
        message += f" — {hint}"
    return InternalError(message, args={"reason": exc.reason})
