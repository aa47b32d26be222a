"""``LocalRuntime``: installed plugins as local processes, one supervisor per plugin.

The runtime owns one task group (``serve``, started by the daemon's lifespan, or ``async with
LocalRuntime(settings)``) in which every supervisor runs, so that a launch goes on even when the
caller that asked for it gives up waiting. A watchdog in the same group checks every
``WATCH_INTERVAL`` seconds that each instance has shown activity (heartbeat or any output)
within ``PLUGIN_HEARTBEAT_TIMEOUT`` and stays under its memory limit.

Needs anyio's asyncio backend (see ``spawning``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from plugin_daemon.config import Settings
from plugin_daemon.runtime import InstanceState, PluginSpec, PluginUnavailable, Runtime, SessionChannel

from .environment import EnvironmentBuilder, EnvironmentBuildError, PluginLayout
from .envvars import extra_plugin_environment
from .idle import IDLE_STATUS, IdlePolicy, IdleStopped
from .memory import MiB, tree_rss
from .sandbox import Sandbox
from .supervisor import PluginSupervisor

logger = logging.getLogger(__name__)

#: Seconds between two watchdog passes (activity and memory).
WATCH_INTERVAL = 0.5
#: SIGTERM → SIGKILL grace when stopping a plugin.
STOP_GRACE = 3.0


class LocalRuntime(Runtime):
    """Runs installed plugins as ``<venv>/bin/python -m <entrypoint>`` subprocesses.

    :param settings: the daemon's settings (working path, uv, timeouts, limits).
    :param extra_env: variables added to every plugin's environment (after the allow-list and
        ``PLUGIN_EXTRA_ENV``), for example ``{"HEARTBEAT_INTERVAL": "1"}`` in tests.
    :raises ValueError: ``PLUGIN_EXTRA_ENV`` is malformed or names one of the daemon's secrets.
    """

    name: ClassVar[str] = "local"

    def __init__(self, settings: Settings, *, extra_env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = {**extra_plugin_environment(settings), **(extra_env or {})}
        if settings.PLUGIN_EXTRA_ENV:
            logger.info(
                "plugins get these extra variables (PLUGIN_EXTRA_ENV): %s", ", ".join(self.extra_env) or "none set"
            )
        self.sandbox = Sandbox(settings)
        self.builder = EnvironmentBuilder(settings, sandbox=self.sandbox)
        self.launch_limiter = anyio.Semaphore(max(1, settings.PLUGIN_LOCAL_LAUNCHING_CONCURRENT))
        self._supervisors: dict[str, PluginSupervisor] = {}
        self.idle_policy = IdlePolicy(settings)
        self._idle_stopped: dict[str, IdleStopped] = {}
        #: processes launched since this runtime was made (each start, restart and wake counts)
        self.launches = 0
        self._group: TaskGroup | None = None
        self._exit_stack: AsyncExitStack | None = None

    # --- lifetime -------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            self.sandbox.log_state()
            if self.sandbox.mode != "off":
                await anyio.to_thread.run_sync(self.sandbox.tighten)
            group.start_soon(self._watchdog)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.aclose()
                self._group = None
                group.cancel_scope.cancel()

    async def __aenter__(self) -> LocalRuntime:
        stack = AsyncExitStack()
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        await group.start(self.serve)
        self._exit_stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._exit_stack = self._exit_stack, None
        with anyio.CancelScope(shield=True):
            await self.aclose()
        if stack is not None:
            await stack.aclose()

    async def aclose(self) -> None:
        supervisors = list(self._supervisors.values())
        self._supervisors.clear()
        self._idle_stopped.clear()
        if not supervisors:
            return
        with anyio.move_on_after(STOP_GRACE + 15):
            async with anyio.create_task_group() as group:
                for supervisor in supervisors:
                    group.start_soon(supervisor.stop, STOP_GRACE)

    # --- the Runtime contract ------------------------------------------------------------------

    def state(self, identifier: str) -> InstanceState:
        supervisor = self._supervisors.get(identifier)
        if supervisor is not None:
            return supervisor.state
        return InstanceState.STOPPED if identifier in self._idle_stopped else InstanceState.ABSENT

    def starts_with_daemon(self, identifier: str) -> bool:
        return self.idle_policy.starts_with_daemon(identifier)

    async def ensure_ready(
        self, spec: PluginSpec, *, timeout: float, progress: Callable[[str], None] | None = None
    ) -> None:
        supervisor = self._supervisors.get(spec.identifier)
        if supervisor is not None and supervisor.state is InstanceState.READY:
            supervisor.last_used = time.monotonic()
            return
        if supervisor is None or (supervisor.state is InstanceState.FAILED and supervisor.may_retry()):
            supervisor = self._launch(spec)
        if progress is not None:
            supervisor.add_listener(progress)
        try:
            with anyio.move_on_after(timeout):
                while True:
                    changed = supervisor.changed
                    state = supervisor.state
                    if state is InstanceState.READY:
                        return
                    if state is InstanceState.FAILED:
                        raise PluginUnavailable(
                            "failed", f"plugin {spec.identifier} failed to start: {supervisor.last_error}"
                        )
                    await changed.wait()
            state = supervisor.state
            raise PluginUnavailable(
                state.value,
                f"plugin {spec.identifier} is not ready after {timeout:g} s "
                f"({state.value}: {supervisor.step or 'waiting'})"
                + (f"; last error: {supervisor.last_error}" if supervisor.last_error else ""),
            )
        finally:
            if progress is not None:
                supervisor.remove_listener(progress)

    async def open_session(self, identifier: str, session_id: str, request_line: bytes) -> SessionChannel:
        supervisor = self._supervisors.get(identifier)
        if supervisor is None or supervisor.state is InstanceState.STARTING:
            # stopped for idleness (maybe just now, after the caller's ensure_ready), or starting
            # for another call: start it or wait for it rather than refuse the call
            stopped = self._idle_stopped.get(identifier)
            spec = supervisor.spec if supervisor is not None else stopped.spec if stopped is not None else None
            if spec is not None:
                await self.ensure_ready(spec, timeout=self.settings.PLUGIN_READY_TIMEOUT)
                supervisor = self._supervisors.get(identifier)
        process = supervisor.process if supervisor is not None else None
        if process is None or supervisor is None or supervisor.state is not InstanceState.READY:
            state = supervisor.state.value if supervisor is not None else InstanceState.ABSENT.value
            raise PluginUnavailable(state, f"plugin {identifier} is not ready ({state})")
        supervisor.last_used = time.monotonic()
        return await process.open_session(session_id, request_line)

    async def stop(self, identifier: str) -> None:
        self._idle_stopped.pop(identifier, None)
        supervisor = self._supervisors.pop(identifier, None)
        if supervisor is not None:
            await supervisor.stop(STOP_GRACE)

    def health(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "idle_timeout": self.idle_policy.timeout,
            "plugins": {
                **{identifier: stopped.health() for identifier, stopped in self._idle_stopped.items()},
                **{identifier: sup.health() for identifier, sup in self._supervisors.items()},
            },
        }

    def instance_states(self) -> dict[str, str]:
        return {
            **{stopped.spec.plugin_id: InstanceState.STOPPED.value for stopped in self._idle_stopped.values()},
            **{sup.spec.plugin_id: sup.state.value for sup in self._supervisors.values()},
        }

    async def discard(self, identifier: str) -> None:
        supervisor = self._supervisors.get(identifier)
        if supervisor is not None and supervisor.state is not InstanceState.FAILED:
            return  # launched (again): its folder is in use; a failed one has no process left
        self._idle_stopped.pop(identifier, None)
        try:
            layout = PluginLayout.for_identifier(self.settings.working_path, identifier)
        except EnvironmentBuildError:
            return
        await self.builder.discard(identifier, layout)

    def leftovers(self, installed: set[str]) -> list[Path]:
        working_path = self.settings.working_path
        kept = set()
        for identifier in installed:
            try:
                kept.add(PluginLayout.for_identifier(working_path, identifier).workdir)
            except EnvironmentBuildError:
                continue  # not a local plugin's identifier: nothing of it on disk
        if not working_path.is_dir():
            return []
        found = []
        for author in sorted(working_path.iterdir()):
            if author.name.startswith(".") or author.is_symlink() or not author.is_dir():
                continue  # the uv cache, lock files
            found += [
                folder
                for folder in sorted(author.iterdir())
                if not folder.name.startswith(".")
                and folder.is_dir()
                and not folder.is_symlink()
                and folder not in kept
            ]
        return found

    def problems(self) -> list[str]:
        failed = sum(1 for sup in self._supervisors.values() if sup.state is InstanceState.FAILED)
        return [f"{failed} local plugin(s) failed for good (restarts exhausted or launch failed)"] if failed else []

    # --- internals -----------------------------------------------------------------------------

    def _launch(self, spec: PluginSpec) -> PluginSupervisor:
        if self._group is None:
            raise RuntimeError("LocalRuntime is not serving: start serve() (the daemon does) or use `async with`")
        supervisor = PluginSupervisor(spec, self)
        self._supervisors[spec.identifier] = supervisor
        self._idle_stopped.pop(spec.identifier, None)
        self._group.start_soon(supervisor.run, name=f"plugin {spec.identifier}")
        return supervisor

    async def _watchdog(self) -> None:
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            try:
                self._stop_idle()
                await self._watch_once()
            except Exception:  # the watchdog must outlive any surprise
                logger.exception("local runtime watchdog pass failed")

    def _stop_idle(self) -> None:
        """Stop the plugins idle for ``PLUGIN_IDLE_TIMEOUT``: out of the table at once (a call from
        now on starts a new process), then stopped in the background."""
        group = self._group
        if group is None:
            return
        for supervisor in self.idle_policy.idle_ones(list(self._supervisors.values()), time.monotonic()):
            identifier = supervisor.spec.identifier
            del self._supervisors[identifier]
            self._idle_stopped[identifier] = IdleStopped(supervisor.spec)
            logger.info(
                "%s: stopped after %g s idle (PLUGIN_IDLE_TIMEOUT); the next call starts it again",
                identifier,
                self.idle_policy.timeout,
            )
            group.start_soon(supervisor.stop, STOP_GRACE, IDLE_STATUS, name=f"idle stop of {identifier}")

    async def _watch_once(self) -> None:
        live = [
            (supervisor, supervisor.current)
            for supervisor in self._supervisors.values()
            if supervisor.current is not None and supervisor.current.alive and supervisor.current.pid
        ]
        if not live:
            return
        now = time.monotonic()
        silence = self.settings.PLUGIN_HEARTBEAT_TIMEOUT
        for supervisor, process in live:
            assert process is not None
            if process.ready and now - process.last_activity > silence:
                process.kill(
                    "PluginUnresponsive",
                    f"plugin {supervisor.spec.plugin_id} sent no heartbeat or output for "
                    f"{now - process.last_activity:.0f} s (PLUGIN_HEARTBEAT_TIMEOUT {silence:g} s); it was stopped",
                )
        pids = [process.pid for _, process in live if process is not None and process.pid]
        usage = await anyio.to_thread.run_sync(tree_rss, pids)
        for supervisor, process in live:
            assert process is not None and process.pid is not None
            rss = usage.get(process.pid)
            supervisor.rss = rss
            limit = supervisor.memory_limit
            if rss is not None and limit is not None and rss > limit and process.alive:
                process.kill(
                    "PluginMemoryLimitExceeded",
                    f"plugin {supervisor.spec.plugin_id} used {rss // MiB} MiB, over its memory limit of "
                    f"{limit // MiB} MiB (its resource.memory, at least PLUGIN_MEMORY_LIMIT_FLOOR); it was stopped",
                )
