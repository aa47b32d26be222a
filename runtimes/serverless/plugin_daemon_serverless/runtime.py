"""``ServerlessRuntime``: installed plugins as functions reached over HTTP.

Launch = find the package's function through the SRI connector, else deploy it there and follow
the streamed stages; the function URL is kept in the database, so a daemon restart (or any
other node sharing the database) calls it without deploying again. One deployment per package
at a time in this process; the connector serialises the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import anyio
import httpx
import orjson
from anyio.abc import TaskGroup, TaskStatus
from plugin_daemon.quickack import quickack_transport
from plugin_daemon.runtime import InstanceState, PluginSpec, PluginUnavailable, Runtime, SessionChannel

from .connector_client import ConnectorClient, ConnectorError
from .errors import ServerlessPayloadTooLarge
from .functions import FunctionRecord, FunctionStore
from .invoke import FunctionChannel, InvokeOptions

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

NAME = "serverless"
#: A failed deployment is tried again on demand once its failure is this old.
FAILED_RETRY_AFTER = 10.0


@dataclass
class Deployment:
    """A deployment under way; callers wait on ``done``."""

    done: anyio.Event = field(default_factory=anyio.Event)
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    step: str = "looking the function up"

    def emit(self, line: str) -> None:
        self.step = line
        for listener in list(self.listeners):
            listener(line)


def http_client(settings: Any) -> httpx.AsyncClient:
    """The one pooled client for functions and the connector."""
    return httpx.AsyncClient(
        transport=quickack_transport(
            httpx.Limits(
                max_connections=settings.SERVERLESS_MAX_CONNECTIONS,
                max_keepalive_connections=min(64, settings.SERVERLESS_MAX_CONNECTIONS),
                keepalive_expiry=4.0,
            )
        ),
        timeout=httpx.Timeout(connect=10.0, read=float(settings.PLUGIN_MAX_EXECUTION_TIMEOUT), write=30.0, pool=30.0),
        trust_env=False,
    )


class ServerlessRuntime(Runtime):
    name: ClassVar[str] = NAME

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        settings = self.settings = daemon.settings
        self.store = FunctionStore(daemon.database)
        self.client = http_client(settings)
        self.options = InvokeOptions(
            max_line=settings.PLUGIN_RUNTIME_MAX_BUFFER_SIZE,
            retries=max(0, settings.MAX_SERVERLESS_RETRY_TIMES),
            backoff=settings.SERVERLESS_RETRY_BACKOFF_MS / 1000,
            signing_secret=settings.DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET,
        )
        self.functions: dict[str, FunctionRecord] = {}
        self.deployments: dict[str, Deployment] = {}
        self.failures: dict[str, tuple[float, str]] = {}
        #: identifiers whose stored function URL answered 404/410: look them up again
        self.stale: set[str] = set()
        self._group: TaskGroup | None = None

    # --- lifetime -------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            if self.settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL:
                group.start_soon(self._ping)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None
                group.cancel_scope.cancel()

    async def _ping(self) -> None:
        try:
            await self.connector().ping()
            log.info("serverless connector %s answered", self.settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL)
        except ConnectorError as exc:
            log.warning("%s; serverless installs will fail until it answers", exc)

    async def aclose(self) -> None:
        await self.client.aclose()

    def connector(self) -> ConnectorClient:
        settings = self.settings
        if not settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL:
            raise ConnectorError(
                "DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL is not set: the serverless runtime has no connector to deploy to"
            )
        return ConnectorClient(
            settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL,
            settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY,
            self.client,
            launch_timeout=float(settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT),
        )

    # --- the Runtime contract ------------------------------------------------------------------

    def state(self, identifier: str) -> InstanceState:
        if identifier in self.functions:
            return InstanceState.READY
        if identifier in self.deployments:
            return InstanceState.STARTING
        if identifier in self.failures:
            return InstanceState.FAILED
        return InstanceState.ABSENT

    async def ensure_ready(
        self, spec: PluginSpec, *, timeout: float, progress: Callable[[str], None] | None = None
    ) -> None:
        identifier = spec.identifier
        if identifier in self.functions:
            return
        record = None if identifier in self.stale else await anyio.to_thread.run_sync(self.store.get, identifier)
        if record is not None and record.checksum == spec.checksum:
            self.functions[identifier] = record
            self.failures.pop(identifier, None)
            return
        deployment = self.deployments.get(identifier)
        if deployment is None:
            failed = self.failures.get(identifier)
            if failed is not None and time.monotonic() - failed[0] < FAILED_RETRY_AFTER:
                raise PluginUnavailable("failed", failed[1])
            deployment = self._deploy(spec)
        if progress is not None:
            deployment.listeners.append(progress)
        try:
            with anyio.move_on_after(timeout):
                await deployment.done.wait()
        finally:
            if progress is not None and progress in deployment.listeners:
                deployment.listeners.remove(progress)
        if identifier in self.functions:
            return
        if identifier in self.failures:
            raise PluginUnavailable("failed", self.failures[identifier][1])
        raise PluginUnavailable(
            "starting", f"the function of {identifier} is not deployed after {timeout:g} s ({deployment.step})"
        )

    async def open_session(self, identifier: str, session_id: str, request_line: bytes) -> SessionChannel:
        record = self.functions.get(identifier)
        if record is None:
            state = self.state(identifier).value
            raise PluginUnavailable(state, f"the function of {identifier} is not deployed ({state})")
        limit = self.settings.MAX_SERVERLESS_REQUEST_BYTES
        if len(request_line) > limit:
            raise ServerlessPayloadTooLarge(
                f"the request is {len(request_line)} bytes, over MAX_SERVERLESS_REQUEST_BYTES ({limit} bytes); "
                "it was not sent to the function",
                args={"size": len(request_line), "limit": limit},
            )
        action = str((orjson.loads(request_line).get("data") or {}).get("action") or "")
        url = f"{record.function_url.rstrip('/')}/invoke?action={quote(action, safe='')}"
        return FunctionChannel(
            self.client, url, session_id, request_line, self.options, on_gone=lambda: self._gone(record)
        )

    async def stop(self, identifier: str) -> None:
        """Functions are not deleted (the cloud keeps them, like the Go daemon); this daemon forgets its copy."""
        self.functions.pop(identifier, None)

    def health(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "connector": self.settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL,
            "functions": {identifier: record.function_url for identifier, record in self.functions.items()},
            "deploying": sorted(self.deployments),
            "failed": {identifier: message for identifier, (_, message) in self.failures.items()},
        }

    # --- internals -----------------------------------------------------------------------------

    def _deploy(self, spec: PluginSpec) -> Deployment:
        if self._group is None:
            raise RuntimeError("ServerlessRuntime is not serving: the daemon starts serve()")
        deployment = Deployment()
        self.deployments[spec.identifier] = deployment
        self._group.start_soon(self._run_deployment, spec, deployment, name=f"deploy {spec.identifier}")
        return deployment

    async def _run_deployment(self, spec: PluginSpec, deployment: Deployment) -> None:
        identifier = spec.identifier
        try:
            with anyio.fail_after(self.settings.DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT + 60):
                connector = self.connector()
                function = await connector.find(identifier)
                if function is not None:
                    deployment.emit(f"found function {function.name or function.endpoint}")
                else:
                    if spec.package_path is None:
                        raise ConnectorError(f"the package of {identifier} is missing; upload it again")
                    package = await anyio.to_thread.run_sync(spec.package_path.read_bytes)
                    deployment.emit("uploading the package to the serverless connector")
                    function = await connector.launch(
                        identifier,
                        package,
                        verified=bool(spec.declaration.get("verified")),
                        progress=deployment.emit,
                    )
            record = FunctionRecord(identifier, spec.checksum, function.endpoint, function.name, function.id)
            await anyio.to_thread.run_sync(self.store.put, record)
            self.functions[identifier] = record
            self.failures.pop(identifier, None)
            self.stale.discard(identifier)
            log.info("plugin %s runs as function %s at %s", identifier, function.name, function.endpoint)
        except (ConnectorError, OSError, TimeoutError) as exc:
            message = str(exc) or repr(exc)
            log.warning("deployment of %s failed: %s", identifier, message)
            self.failures[identifier] = (time.monotonic(), message)
        except Exception as exc:  # never leave callers waiting on a bug
            log.exception("deployment of %s failed", identifier)
            self.failures[identifier] = (time.monotonic(), f"internal error: {exc!r}")
        finally:
            self.deployments.pop(identifier, None)
            deployment.done.set()

    def _gone(self, record: FunctionRecord) -> None:
        """The function URL answered 404/410: look it up (or deploy) again on the next call."""
        log.warning("function %s of %s is gone; it will be looked up again", record.function_url, record.identifier)
        if self.functions.get(record.identifier) == record:
            del self.functions[record.identifier]
            self.stale.add(record.identifier)
