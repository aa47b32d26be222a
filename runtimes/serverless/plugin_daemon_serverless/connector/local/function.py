"""One emulated function: the plugin run with the real SDK in serverless mode, on loopback.

The process starts on the first call (cold start), serves every call after it (many at once),
and is stopped when it has been idle for ``idle_timeout`` (scale to zero); the next call starts
it again. A process that dies is simply not running any more: the next call starts a new one.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import httpx
from plugin_daemon.config import Settings
from plugin_daemon.protocol.messages import encode_request
from plugin_daemon_local.commands import OutputTail
from plugin_daemon_local.environment import PluginLayout
from plugin_daemon_local.envvars import plugin_environment
from plugin_daemon_local.sandbox import Confinement, IsolationUnavailable, Sandbox
from plugin_daemon_local.spawning import ReaderStream, signal_group, spawn

from ..options import ConnectorOptions
from .registry import FunctionEntry

log = logging.getLogger(__name__)

STOP_GRACE = 3.0
OUTPUT_TAIL_BYTES = 8192
#: Deadline of one health probe during a cold start.
PROBE_TIMEOUT = 1.0
#: Output that marks a failed start (the SDK's server thread can outlive a crashed main thread).
TRACEBACK = b"Traceback (most recent call last)"

StartSoon = Callable[..., Any]


class FunctionStartError(Exception):
    """The function did not come up; the message carries its output tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalFunction:
    def __init__(
        self,
        entry: FunctionEntry,
        layout: PluginLayout,
        settings: Settings,
        options: ConnectorOptions,
        client: httpx.AsyncClient,
        start_soon: StartSoon,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.entry = entry
        #: confines the function's process as the local runtime confines a plugin's (PLUGIN_ISOLATION)
        self.sandbox = sandbox
        self.layout = layout
        self.settings = settings
        self.options = options
        self.client = client
        self.start_soon = start_soon
        self.process: Any = None
        self.base_url = ""
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.calls = 0
        self.cold_starts = 0
        self.exits = 0
        self.tail = OutputTail(OUTPUT_TAIL_BYTES)
        self._lock = anyio.Lock()
        self._stopping: Any = None
        self._last: Any = None  # the newest process, running or not

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def state(self) -> str:
        return "running" if self.running else "stopped"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "identifier": self.entry.identifier,
            "state": self.state,
            "pid": self.process.pid if self.running else None,
            "in_flight": self.in_flight,
            "idle_seconds": round(time.monotonic() - self.last_used, 3),
            "calls": self.calls,
            "cold_starts": self.cold_starts,
            "exits": self.exits,
        }

    # --- calls ---------------------------------------------------------------------------------

    async def acquire(self) -> str:
        """The base URL of a running process (started if needed); pair with :meth:`release`."""
        self.in_flight += 1
        self.calls += 1
        try:
            async with self._lock:
                if not self.running:
                    await self._start()
        except BaseException:
            self.in_flight -= 1
            raise
        self.last_used = time.monotonic()
        return self.base_url

    def release(self) -> None:
        self.in_flight -= 1
        self.last_used = time.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.last_used if self.in_flight == 0 else 0.0

    # --- process -------------------------------------------------------------------------------

    def _environment(self, port: int) -> dict[str, str]:
        env = plugin_environment(self.settings, self.layout.venv)
        env.update(
            {
                "INSTALL_METHOD": "serverless",
                "SERVERLESS_HOST": "127.0.0.1",
                "SERVERLESS_PORT": str(port),
                "DIFY_PLUGIN_DAEMON_URL": self.options.daemon_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def _start(self) -> None:
        runner = (self.entry.declaration.get("meta") or {}).get("runner") or {}
        entrypoint = str(runner.get("entrypoint") or "main")
        for attempt in (1, 2):
            port = free_port()
            self.base_url = ""
            self.tail = OutputTail(OUTPUT_TAIL_BYTES)
            started = time.monotonic()
            process = await spawn(
                [str(self.layout.python), "-m", entrypoint],
                cwd=self.layout.workdir,
                env=self._environment(port),
                merge_stderr=True,
                confinement=await self._confinement(),
            )
            self.process = self._last = process
            trouble = anyio.Event()  # the process exited, or printed a traceback, during the start
            self.start_soon(self._pump, process, trouble)
            self.start_soon(self._watch, process, trouble)
            base_url = f"http://127.0.0.1:{port}"
            try:
                await self._until_ready(base_url, trouble)
            except BaseException as exc:  # failed, or the caller gave up: no half-started process stays
                with anyio.CancelScope(shield=True):
                    await self._kill(process)
                if (
                    isinstance(exc, FunctionStartError)
                    and attempt == 1
                    and "Address already in use" in self.tail.text()
                ):
                    continue  # lost the port to someone else between picking and binding it
                raise
            self.base_url = base_url
            self.cold_starts += 1
            log.info(
                "function %s started (pid %d, port %d) in %.2f s",
                self.entry.name,
                process.pid,
                port,
                time.monotonic() - started,
            )
            return

    async def _confinement(self) -> Confinement | None:
        if self.sandbox is None:
            return None
        plugin_id = self.entry.identifier.split(":", 1)[0]
        try:
            return await anyio.to_thread.run_sync(
                self.sandbox.confine_plugin, plugin_id, self.layout.workdir, self.layout.venv
            )
        except (IsolationUnavailable, OSError) as exc:
            raise FunctionStartError(f"cannot isolate function {self.entry.name}: {exc}") from exc

    async def _until_ready(self, base_url: str, trouble: anyio.Event) -> None:
        """``/health`` answers, then a no-op request comes back with ``end`` (the request loop runs)."""
        timeout = self.options.start_timeout
        ready = False
        refused: Exception | None = None
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:

                async def stop_on_trouble() -> None:
                    await trouble.wait()
                    group.cancel_scope.cancel()

                group.start_soon(stop_on_trouble)
                try:
                    await self._until_healthy(base_url)
                    await self._probe(base_url)
                    ready = True
                except (FunctionStartError, httpx.HTTPError) as exc:
                    refused = exc
                group.cancel_scope.cancel()
        if ready:
            return
        if refused is not None and not trouble.is_set():
            raise FunctionStartError(
                f"function {self.entry.name} failed its cold start: {refused}\n{self.output(2000)}"
            )
        if trouble.is_set():
            await self._output_settles()
            code = self.process.returncode if self.process is not None else None
            how = f"exited (code {code})" if code is not None else "failed"
            raise FunctionStartError(f"function {self.entry.name} {how} during its cold start:\n{self.output(2000)}")
        raise FunctionStartError(
            f"function {self.entry.name} was not ready within {timeout:g} s (--start-timeout):\n{self.output(2000)}"
        )

    async def _output_settles(self, quiet: float = 0.2, limit: float = 2.0) -> None:
        """Let a traceback being printed finish (no new output for ``quiet`` s, at most ``limit`` s)."""
        with anyio.move_on_after(limit):
            while True:
                seen = self.tail.total
                await anyio.sleep(quiet)
                if self.tail.total == seen:
                    return

    async def _until_healthy(self, base_url: str) -> None:
        interval = 0.02
        while True:
            try:
                response = await self.client.get(f"{base_url}/health", timeout=PROBE_TIMEOUT)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await anyio.sleep(interval)  # polling a port that is not open yet; the caller holds the deadline
            interval = min(interval * 1.5, 0.25)

    async def _probe(self, base_url: str) -> None:
        """An action no plugin has: the SDK answers it with just ``end`` once its request loop runs."""
        session_id = f"readiness-probe-{uuid.uuid4().hex}"
        body = encode_request(session_id, {"user_id": "", "type": "tool", "action": "readiness_probe"})
        headers = {"Content-Type": "application/json"}
        async with self.client.stream("POST", f"{base_url}/invoke", content=body, headers=headers) as response:
            if response.status_code != 200:
                raise FunctionStartError(f"the readiness probe got HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if session_id in line and '"end"' in line:
                    return
        raise FunctionStartError("the readiness probe got no end frame")

    async def _pump(self, process: Any, trouble: anyio.Event) -> None:
        stream = ReaderStream(process.stdout)
        while True:
            try:
                chunk = await stream.receive(65536)
            except anyio.EndOfStream:
                return
            self.tail.add(chunk)
            if TRACEBACK in chunk and self.base_url == "":
                trouble.set()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("function %s: %s", self.entry.name, chunk.decode("utf-8", "replace").rstrip())

    async def _watch(self, process: Any, trouble: anyio.Event) -> None:
        code = await process.wait()
        trouble.set()
        if self._stopping is process:
            return
        self.exits += 1
        log.warning("function %s (pid %d) exited with code %s\n%s", self.entry.name, process.pid, code, self.output())

    async def exit_code(self, timeout: float) -> int | None:
        """The newest process's exit code, waiting up to ``timeout`` for it to exit."""
        process = self._last
        if process is None:
            return None
        with anyio.move_on_after(timeout):
            await process.wait()
        return process.returncode

    def output(self, limit: int = 1000) -> str:
        """The end of the function's output without its access-log and banner lines."""
        lines = [
            line
            for line in self.tail.text().splitlines()
            if line.strip() and not line.startswith(("* ", "127.0.0.1 - - ["))
        ]
        return "\n".join(lines)[-limit:]

    async def stop(self, *, only_if_idle_for: float | None = None) -> bool:
        """Stop the process; with ``only_if_idle_for``, only if no call came meanwhile. True if stopped."""
        async with self._lock:
            if not self.running:
                return False
            if only_if_idle_for is not None and self.idle_for(time.monotonic()) < only_if_idle_for:
                return False
            await self._kill(self.process)
            return True

    async def _kill(self, process: Any) -> None:
        self._stopping = process
        try:
            if process.returncode is None:
                signal_group(process.pid, signal.SIGTERM)
                with anyio.move_on_after(STOP_GRACE, shield=True):
                    await process.wait()
            if process.returncode is None:
                signal_group(process.pid, signal.SIGKILL)
                with anyio.move_on_after(5, shield=True):
                    await process.wait()
        finally:
            if self.process is process:
                self.process = None
