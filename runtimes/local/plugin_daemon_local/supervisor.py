"""One installed plugin's life in the local runtime: launch, ready, crash, restart, give up.

States (``InstanceState``): STARTING while the first launch is under way (environment build,
process start, waiting for the first heartbeat), READY, RESTARTING after the instance died and
until its replacement is ready, FAILED when the first launch failed or when
``PLUGIN_RESTART_MAX_ATTEMPTS`` consecutive attempts failed without a healthy minute in
between. Restarts wait 0.5 s, doubling up to 30 s.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from plugin_daemon.metrics import RESTARTS
from plugin_daemon.runtime import InstanceState, PluginSpec

from .environment import EnvironmentBuildError
from .envvars import plugin_environment
from .launch_command import LaunchCommandError, launch_command
from .process import PluginProcess, describe_exit
from .sandbox import IsolationUnavailable

if TYPE_CHECKING:
    from .runtime import LocalRuntime

logger = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: An instance that stayed ready this long resets the consecutive-failure count.
HEALTHY_AFTER = 60.0
#: A FAILED plugin is launched again on demand once its failure is this old.
FAILED_RETRY_AFTER = 60.0


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Outcome:
    launched: bool  # False: never became ready
    message: str
    healthy_for: float = 0.0


class PluginSupervisor:
    """Runs, watches and restarts the instance of one plugin (one process at a time)."""

    def __init__(self, spec: PluginSpec, runtime: LocalRuntime) -> None:
        self.spec = spec
        self.runtime = runtime
        self.state = InstanceState.STARTING
        self.process: PluginProcess | None = None  # the ready instance
        self.current: PluginProcess | None = None  # the live process, ready or not
        self.restarts = 0
        #: names the plugin in structured logs (LOG_OUTPUT_FORMAT=json)
        self.log_ids = {"plugin_id": spec.plugin_id}
        self.last_error: str | None = None
        self.failed_at: float | None = None
        self.step: str | None = None
        self.rss: int | None = None
        #: monotonic time of the last call (or of the last sight of a session in flight)
        self.last_used = time.monotonic()
        self.finished = anyio.Event()
        self._changed = anyio.Event()
        self._listeners: list[Callable[[str], None]] = []
        self._scope: anyio.CancelScope | None = None
        self._stopping = False
        # resource.memory is a placeholder in most manifests (1 MiB in many official plugins, while an
        # idle SDK process takes 60-90 MiB and one with pandas 130): it counts only above the floor
        declared = spec.memory_limit or 0
        floor = runtime.settings.PLUGIN_MEMORY_LIMIT_FLOOR
        self.memory_limit = max(declared, floor) if floor > 0 else None

    # --- state and progress -----------------------------------------------------------------

    @property
    def changed(self) -> anyio.Event:
        """Set at the next state change (take it before checking the state, then wait)."""
        return self._changed

    def _set_state(self, state: InstanceState) -> None:
        self.state = state
        event, self._changed = self._changed, anyio.Event()
        event.set()

    def add_listener(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)
        if self.step is not None:
            _call(callback, self.step)

    def remove_listener(self, callback: Callable[[str], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def progress(self, line: str) -> None:
        self.step = line
        logger.debug("%s: %s", self.spec.identifier, line)
        for callback in list(self._listeners):
            _call(callback, line)

    def may_retry(self) -> bool:
        return self.failed_at is not None and time.monotonic() - self.failed_at >= FAILED_RETRY_AFTER

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                await self._loop()
        finally:
            self.process = self.current = None
            self.finished.set()

    async def _loop(self) -> None:
        failures = 0
        launched_before = False
        max_attempts = max(1, self.runtime.settings.PLUGIN_RESTART_MAX_ATTEMPTS)
        while True:
            outcome = await self._instance()
            self.last_error = outcome.message
            if self._stopping:
                return
            if not outcome.launched and not launched_before:
                self._fail(outcome.message)
                return
            launched_before = True
            if outcome.healthy_for >= HEALTHY_AFTER:
                failures = 0
            failures += 1
            if failures >= max_attempts:
                self._fail(f"gave up after {failures} consecutive failed starts; the last one: {outcome.message}")
                return
            delay = backoff(failures)
            self.restarts += 1
            RESTARTS.inc((self.spec.plugin_id, "local"))
            logger.warning(
                "%s: restarting in %.1f s: %s", self.spec.identifier, delay, outcome.message, extra=self.log_ids
            )
            self._set_state(InstanceState.RESTARTING)
            self.progress(f"restarting in {delay:.1f} s")
            await anyio.sleep(delay)

    def _fail(self, message: str) -> None:
        self.last_error = message
        self.failed_at = time.monotonic()
        logger.error("%s: launch failed: %s", self.spec.identifier, message, extra=self.log_ids)
        self._set_state(InstanceState.FAILED)

    async def _instance(self) -> Outcome:
        """Launch one process and live with it until it exits."""
        spec = self.spec
        runtime = self.runtime
        async with anyio.create_task_group() as group:
            async with self._launch_slot():
                try:
                    layout = await runtime.builder.prepare(spec, self.progress)
                except EnvironmentBuildError as exc:
                    return Outcome(False, str(exc))
                except Exception as exc:  # an unexpected failure must not leave callers waiting
                    logger.exception("%s: preparing the environment failed", spec.identifier, extra=self.log_ids)
                    return Outcome(False, f"preparing the environment failed: {type(exc).__name__}: {exc}")
                try:
                    command = launch_command(
                        spec,
                        layout.python,
                        layout.venv,
                        plugin_environment(runtime.settings, layout.venv, runtime.extra_env),
                    )
                except LaunchCommandError as exc:
                    return Outcome(False, str(exc))
                try:
                    confinement = await anyio.to_thread.run_sync(
                        runtime.sandbox.confine_plugin, spec.plugin_id, layout.workdir, layout.venv
                    )
                except (IsolationUnavailable, OSError) as exc:
                    return Outcome(False, f"cannot isolate plugin {spec.plugin_id}: {exc}")
                process = PluginProcess(
                    spec, command.argv, layout.workdir, command.env, runtime.settings, confinement, command.codec
                )
                self.progress("starting plugin process")
                try:
                    await process.start()
                except (OSError, subprocess.SubprocessError) as exc:
                    return Outcome(False, f"cannot start plugin {spec.plugin_id}: {exc}")
                self.current = process
                runtime.launches += 1
                process.on_exit = self._on_exit
                group.start_soon(process.run)
                ready_timeout = runtime.settings.PLUGIN_READY_TIMEOUT
                with anyio.move_on_after(ready_timeout):
                    await process.settled.wait()
                if not process.ready:
                    if process.alive:
                        process.kill(
                            "PluginStartTimeout",
                            f"plugin {spec.plugin_id} sent no heartbeat within {ready_timeout:g} s of starting",
                        )
                    with anyio.move_on_after(10):
                        await process.exited.wait()
                    return Outcome(False, self._launch_failure(process))
            self.process = process
            self.last_used = time.monotonic()
            self.progress("ready")
            self._set_state(InstanceState.READY)
            await process.exited.wait()
        self.process = self.current = None
        ready_at = process.ready_at or time.monotonic()
        return Outcome(True, process.exit_message()[1], time.monotonic() - ready_at)

    def _on_exit(self, process: PluginProcess) -> None:
        """The ready instance is gone: stop routing to it before its sessions hear about it."""
        if self.process is process:
            self.process = None
            if not self._stopping and self.state is InstanceState.READY:
                self._set_state(InstanceState.RESTARTING)
                self.progress("restarting")

    def _launch_failure(self, process: PluginProcess) -> str:
        tail_text = process.output_tails()
        if process.termination is not None and process.termination[0] != "PluginStartTimeout":
            return process.termination[1]
        if process.termination is not None:
            return f"{process.termination[1]}; it was stopped{tail_text}"
        return f"plugin {self.spec.plugin_id} {describe_exit(process.returncode)} before it was ready{tail_text}"

    @asynccontextmanager
    async def _launch_slot(self) -> AsyncIterator[None]:
        limiter = self.runtime.launch_limiter
        if limiter.value == 0:
            self.progress("waiting for a launch slot (PLUGIN_LOCAL_LAUNCHING_CONCURRENT)")
        async with limiter:
            yield

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self, grace: float, reason: str = "stopped") -> None:
        """Stop the instance (SIGTERM, then SIGKILL after ``grace``) and the loop; wait for both."""
        self._stopping = True
        process = self.current
        if process is not None:
            await process.stop(grace, "PluginStopped", f"plugin {self.spec.plugin_id} was {reason}")
        if self._scope is not None:
            self._scope.cancel()
        with anyio.move_on_after(grace + 10):
            await self.finished.wait()

    def health(self) -> dict[str, Any]:
        process = self.current
        return {
            "state": self.state.value,
            "pid": process.pid if process is not None and process.alive else None,
            "rss": self.rss,
            "memory_limit": self.memory_limit,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "step": self.step,
            "sessions": len(process.sessions) if process is not None else 0,
        }


def _call(callback: Callable[[str], None], line: str) -> None:
    try:
        callback(line)
    except Exception:  # a caller's progress callback must not break the launch
        logger.warning("progress callback failed", exc_info=sys.exc_info())
