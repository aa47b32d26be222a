"""``LocalProvider``: functions emulated as local processes, built with the local runtime's builder.

A launch decodes the package, keeps it, builds its environment (``EnvironmentBuilder``: the
same venv layout and reuse-by-checksum as the local runtime), starts the function once to
prove that it answers, and registers it; deployments of one package are shared, so launching
it twice (or twice at once) builds once. A reaper stops functions idle for ``idle_timeout``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup, TaskStatus
from plugin_daemon.config import load_settings
from plugin_daemon.quickack import quickack_transport
from plugin_daemon.runtime import PluginSpec
from plugin_daemon_local.environment import EnvironmentBuilder, EnvironmentBuildError, PluginLayout
from starlette.routing import BaseRoute, Route

from ...sri import RUNNING, SUCCESS, FunctionInfo, LaunchEvent
from ..deployments import Deployment, Deployments
from ..options import ConnectorOptions
from ..provider import LaunchFailed, Provider, check_launch_package
from .front import Front
from .function import FunctionStartError, LocalFunction
from .registry import FunctionEntry, Registry

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def function_name(identifier: str, checksum: str) -> str:
    """``author/name:version@checksum`` → ``author-name-<12 hex>`` (a cloud-safe name, ≤ 64 chars)."""
    plugin_id = identifier.partition(":")[0]
    stem = _UNSAFE.sub("-", plugin_id.lower().replace("/", "-").replace("_", "-")).strip("-")[:48]
    return f"{stem}-{checksum[:12]}"


class LocalProvider(Provider):
    def __init__(self, options: ConnectorOptions) -> None:
        super().__init__(options)
        self.settings = load_settings(PLUGIN_DAEMON_HOME=options.home, PLUGIN_WORKING_PATH=options.work_path)
        self.builder = EnvironmentBuilder(self.settings)
        self.builder.sandbox.log_state()  # functions are confined as local plugins are
        self.registry = Registry(options.home / "functions.json")
        self.functions: dict[str, LocalFunction] = {}  # by name
        self.deployments = Deployments("local", (LaunchFailed, EnvironmentBuildError, FunctionStartError, OSError))
        self.faults: dict[str, list[int]] = {}
        self.launches = 0
        self.lookups = 0
        #: seconds a function may stay idle before it is stopped (changeable while running)
        self.idle_timeout = options.idle_timeout
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=options.function_timeout, write=30.0, pool=30.0),
            transport=quickack_transport(httpx.Limits(max_connections=1000, max_keepalive_connections=100)),
            trust_env=False,
        )
        self._group: TaskGroup | None = None

    # --- lifetime -------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        (self.options.home / "packages").mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(self.registry.load)
        async with anyio.create_task_group() as group:
            self._group = self.deployments.group = group
            for entry in self.registry.entries.values():
                self._register(entry)
            group.start_soon(self._reap_idle)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._stop_all()
                self._group = self.deployments.group = None
                group.cancel_scope.cancel()

    async def aclose(self) -> None:
        await self._stop_all()
        await self.client.aclose()

    async def _stop_all(self) -> None:
        with anyio.move_on_after(15, shield=True):
            async with anyio.create_task_group() as group:
                for function in list(self.functions.values()):
                    group.start_soon(function.stop)

    async def _reap_idle(self) -> None:
        while True:
            idle = self.idle_timeout
            await anyio.sleep(min(1.0, max(0.05, idle / 4)))
            now = time.monotonic()
            for function in list(self.functions.values()):
                if function.running and function.idle_for(now) >= idle and await function.stop(only_if_idle_for=idle):
                    log.info("function %s scaled to zero after %.1f s idle", function.entry.name, idle)

    # --- the SRI --------------------------------------------------------------------------------

    async def find(self, filename: str) -> FunctionInfo | None:
        self.lookups += 1
        entry = self.registry.entries.get(filename)
        if entry is None:
            return None
        return self._info(entry)

    def _info(self, entry: FunctionEntry) -> FunctionInfo:
        function = self.functions.get(entry.name)
        return FunctionInfo(
            id=entry.id,
            name=entry.name,
            endpoint=self.endpoint(entry.name),
            resource_name=f"local:function:{entry.name}",
            state=function.state if function is not None else "stopped",
        )

    def endpoint(self, name: str) -> str:
        return f"{self.options.public_url.rstrip('/')}/functions/{name}"

    def launch(
        self, filename: str, package: bytes, *, verified: bool, metadata: dict[str, Any]
    ) -> AsyncIterator[LaunchEvent]:
        return self.deployments.launch(
            filename, lambda deployment: self._deploy(deployment, filename, package, verified, metadata)
        )

    async def _deploy(
        self, deployment: Deployment, filename: str, package: bytes, verified: bool, metadata: dict[str, Any]
    ) -> None:
        self.launches += 1
        existing = self.registry.entries.get(filename)
        if existing is not None:
            deployment.already_deployed(self._info(existing))
            return
        try:
            deployment.emit("healthz", RUNNING, "checking the package")
            entry = await anyio.to_thread.run_sync(self._check_package, filename, package, verified, metadata)
            deployment.emit("healthz", SUCCESS, f"package {entry.identifier}")
            deployment.emit("start", RUNNING, "extracting the package")
            layout = await self._build(entry, deployment)
            deployment.emit("build", SUCCESS, "environment ready")
            deployment.emit("run", RUNNING, "starting the function")
            function = self._register(entry, layout)
            await function.acquire()  # a first cold start proves the function answers
            function.release()
            await anyio.to_thread.run_sync(self.registry.add, entry)
            deployment.launched(self.endpoint(entry.name), entry.name, entry.id)
        except Exception:
            await self._unregister(filename)  # a failed launch leaves no function behind
            raise

    def _check_package(self, filename: str, package: bytes, verified: bool, metadata: dict[str, Any]) -> FunctionEntry:
        decoded = check_launch_package(filename, package, metadata, max_size=self.options.max_package_size)
        identifier = str(decoded.identifier)
        path = self.options.home / "packages" / filename
        path.write_bytes(package)
        return FunctionEntry(
            filename=filename,
            name=function_name(identifier, decoded.checksum),
            id=decoded.checksum[:32],
            identifier=identifier,
            checksum=decoded.checksum,
            package=str(path),
            declaration=decoded.declaration,
            verified=verified,
        )

    async def _build(self, entry: FunctionEntry, deployment: Deployment) -> PluginLayout:
        spec = self._spec(entry)
        deployment.emit("build", RUNNING, "building the environment")
        return await self.builder.prepare(spec, lambda line: deployment.emit("build", RUNNING, line))

    @staticmethod
    def _spec(entry: FunctionEntry) -> PluginSpec:
        return PluginSpec(
            identifier=entry.identifier,
            plugin_id=entry.identifier.partition(":")[0],
            checksum=entry.checksum,
            declaration=entry.declaration,
            package_path=Path(entry.package),
        )

    async def _unregister(self, filename: str) -> None:
        """Drop the function of a failed launch (it was never listed)."""
        if filename in self.registry.entries:
            return
        for name, function in list(self.functions.items()):
            if function.entry.filename == filename:
                del self.functions[name]
                await function.stop()

    def _register(self, entry: FunctionEntry, layout: PluginLayout | None = None) -> LocalFunction:
        function = self.functions.get(entry.name)
        if function is None:
            assert self._group is not None
            layout = layout or PluginLayout.for_identifier(self.options.work_path, entry.identifier)
            function = LocalFunction(
                entry, layout, self.settings, self.options, self.client, self._group.start_soon, self.builder.sandbox
            )
            self.functions[entry.name] = function
        return function

    # --- emulator extras ------------------------------------------------------------------------

    def take_fault(self, name: str) -> int | None:
        pending = self.faults.get(name)
        return pending.pop(0) if pending else None

    def routes(self) -> list[BaseRoute]:
        front = Front(self)
        return [
            Route("/functions/{name}/invoke", front.invoke, methods=["POST"]),
            Route("/v1/emulator/faults", front.faults, methods=["POST"]),
            Route("/v1/emulator/functions", front.functions, methods=["GET"]),
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "provider": "local",
            "daemon_url": self.options.daemon_url,
            "idle_timeout": self.idle_timeout,
            "launches": self.launches,
            "lookups": self.lookups,
            "functions": {name: function.describe() for name, function in self.functions.items()},
        }
