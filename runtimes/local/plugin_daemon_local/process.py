"""One plugin process: spawn it, read its stdout and stderr, route sessions, watch its exit.

One task reads stdout and hands every line to a :class:`~plugin_daemon.protocol.router.SessionRouter`
synchronously (no task per request or per frame); the lines that are not protocol frames go to
a :class:`~plugin_daemon_local.stray_output.StrayOutput` (bounded tail, logged in bursts);
one task reads stderr into the log and a bounded tail, within budgets (a plugin that floods
stderr is slowed down, and its flood is not logged, so that it costs the others nothing); the
exit watcher fails every session in flight at once when the process goes, with the exit code
and both tails, or with the reason the runtime gave when it killed the process on purpose.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from plugin_daemon.config import Settings
from plugin_daemon.protocol.channels import QueueSessionChannel
from plugin_daemon.protocol.codecs import CodecLink, LineCodec, send_heartbeats
from plugin_daemon.protocol.framing import LineReader
from plugin_daemon.protocol.router import SessionRouter
from plugin_daemon.runtime import PluginSpec, PluginUnavailable

from .commands import OutputTail
from .sandbox import Confinement
from .spawning import ReaderStream, signal_group, spawn
from .stray_output import StrayOutput

#: Bytes of stderr kept for error messages.
STDERR_TAIL_BYTES = 4096
#: Longest stderr line logged (a longer one is cut).
STDERR_LINE_MAX = 8192
#: stderr read per plugin: bytes per second, and the burst allowed above it. Past that, reading
#: pauses and the plugin's own writes to stderr block.
STDERR_READ_RATE = 1024 * 1024
STDERR_READ_BURST = 4 * 1024 * 1024
#: stderr logged per plugin: bytes per second, and the burst; the rest is counted, not logged.
STDERR_LOG_RATE = 16 * 1024
STDERR_LOG_BURST = 256 * 1024
#: After the process exits, how long its pipes may still be drained.
DRAIN_GRACE = 1.0
#: Deadline on a blocked write to the plugin's stdin (the plugin is not reading).
STDIN_WRITE_TIMEOUT = 30.0
#: Above this many bytes waiting in the stdin pipe buffer, writers wait for it to drain.
STDIN_HIGH_WATER = 1024 * 1024


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"exited with code {code} (killed by {name})"
    return f"exited with code {code}"


class ByteBudget:
    """A token bucket of bytes: ``rate`` per second, at most ``burst`` saved up."""

    __slots__ = ("available", "burst", "rate", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = self.available = burst
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.available = min(self.burst, self.available + (now - self.stamp) * self.rate)
        self.stamp = now

    def spend(self, size: int) -> float:
        """Spend ``size`` bytes (going into debt if needed); the seconds until the debt is paid."""
        self._refill()
        self.available -= size
        return -self.available / self.rate if self.available < 0 else 0.0

    def try_spend(self, size: int) -> bool:
        """Spend ``size`` bytes only if they are there."""
        self._refill()
        if self.available < size:
            return False
        self.available -= size
        return True


class PluginProcess:
    """A running plugin: ``python -m <entrypoint>``, or its own program when it speaks a codec."""

    def __init__(
        self,
        spec: PluginSpec,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        settings: Settings,
        confinement: Confinement | None = None,
        codec: LineCodec | None = None,
    ) -> None:
        self.spec = spec
        self.confinement = confinement
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.max_line = settings.PLUGIN_RUNTIME_MAX_BUFFER_SIZE
        self.logger = logging.getLogger(f"plugin.{spec.plugin_id}")
        self.stray_stdout = StrayOutput(self.logger)
        #: a plugin that does not speak the SDK protocol talks through its codec (None: SDK)
        self.codec = codec
        self._link = CodecLink(codec, self.write_line) if codec is not None else None
        self.heartbeat_interval = max(settings.PLUGIN_LINE_HEARTBEAT_INTERVAL, 0.1)
        self.router = SessionRouter(
            spec.plugin_id,
            self._link.write if self._link is not None else self.write_line,
            max_line=self.max_line,
            logger=self.logger,
            on_heartbeat=self._heartbeat,
            on_unreadable=self.stray_stdout.add,
        )
        if self._link is not None:
            self._link.router = self.router
        self.stderr_tail = OutputTail(STDERR_TAIL_BYTES)
        self._read_budget = ByteBudget(STDERR_READ_RATE, STDERR_READ_BURST)
        self._log_budget = ByteBudget(STDERR_LOG_RATE, STDERR_LOG_BURST)
        #: stderr bytes read but not logged (over the log budget) since the last report of them
        self.stderr_unlogged = 0
        self.pid: int | None = None
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.last_activity = 0.0
        self.returncode: int | None = None
        #: (error_type, message) when the runtime stopped the process on purpose.
        self.termination: tuple[str, str] | None = None
        #: Called synchronously when the process is found gone, before sessions are failed.
        self.on_exit: Callable[[PluginProcess], None] | None = None
        self.settled = anyio.Event()  # ready, or exited
        self.exited = anyio.Event()  # exited, pipes drained, sessions failed
        self._process: Any = None
        self._drain_lock = anyio.Lock()
        self._stdout_done = anyio.Event()
        self._stderr_done = anyio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._process = await spawn(self.argv, cwd=self.cwd, env=self.env, stdin=True, confinement=self.confinement)
        self.pid = self._process.pid
        self.started_at = self.last_activity = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._process is not None and self.returncode is None and self._process.returncode is None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    async def run(self) -> None:
        """Read the pipes until the process exits; then fail what was in flight. Kills on cancel."""
        process = self._process
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._read_stdout)
                group.start_soon(self._read_stderr)
                group.start_soon(self.stray_stdout.log_in_bursts)
                if self.codec is not None:
                    beat = self.heartbeat_interval
                    group.start_soon(send_heartbeats, self.codec, self.write_line, beat, lambda: self.alive)
                await process.wait()
                self._notify_exit()  # stop routing new sessions here before draining
                with anyio.move_on_after(DRAIN_GRACE):
                    await self._stdout_done.wait()
                    await self._stderr_done.wait()
                signal_group(process.pid, signal.SIGKILL)  # grandchildren holding the pipes
                group.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                signal_group(process.pid, signal.SIGKILL)
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await process.wait()
            self.returncode = process.returncode
            self._notify_exit()
            self._fail_sessions()
            self.settled.set()
            self.exited.set()

    def _notify_exit(self) -> None:
        callback, self.on_exit = self.on_exit, None
        if callback is not None:
            callback(self)

    def exit_message(self) -> tuple[str, str]:
        """(error_type, message) describing why the process is gone."""
        if self.termination is not None:
            return self.termination
        return (
            "PluginProcessExited",
            f"plugin {self.spec.plugin_id} {describe_exit(self.returncode)}{self.output_tails()}",
        )

    def output_tails(self) -> str:
        """The ends of what the process wrote outside the protocol, for error messages (``; ...``)."""
        stderr = self.stderr_tail.text().strip()
        stdout = self.stray_stdout.text()
        return (f"; stderr tail:\n{stderr}" if stderr else "; it wrote nothing to stderr") + (
            f"; stdout tail (lines that are not protocol frames):\n{stdout}" if stdout else ""
        )

    @property
    def sessions(self) -> dict[str, QueueSessionChannel]:
        """The sessions in flight."""
        return self.router.sessions

    def _fail_sessions(self) -> None:
        if self.router.sessions:
            self.router.fail_all(*self.exit_message())

    def kill(self, error_type: str, message: str) -> None:
        """Kill the process group now; sessions in flight get ``error_type``/``message``."""
        if self.termination is None:
            self.termination = (error_type, message)
        if self.alive and self.pid is not None:
            signal_group(self.pid, signal.SIGKILL)

    async def stop(self, grace: float, error_type: str, message: str) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; returns once it is gone."""
        if self.termination is None:
            self.termination = (error_type, message)
        if self.alive and self.pid is not None:
            signal_group(self.pid, signal.SIGTERM)
            with anyio.move_on_after(grace):
                await self.exited.wait()
            if not self.exited.is_set():
                signal_group(self.pid, signal.SIGKILL)
        with anyio.move_on_after(grace + 5):
            await self.exited.wait()

    # --- sessions --------------------------------------------------------------------------

    async def open_session(self, session_id: str, request_line: bytes) -> QueueSessionChannel:
        return await self.router.open_session(session_id, request_line)

    async def write_line(self, line: bytes) -> None:
        """Write one line (a newline is added) to stdin.

        The line goes whole into the pipe transport's buffer, in call order, so concurrent
        writers never interleave; a writer waits (with a deadline) only when the plugin is not
        reading and the buffer has grown past ``STDIN_HIGH_WATER``.
        """
        process = self._process
        if not self.alive or process.stdin.is_closing():
            raise PluginUnavailable("restarting", f"plugin {self.spec.plugin_id} is not running")
        stdin = process.stdin
        stdin.writelines((line, b"\n"))
        if stdin.transport.get_write_buffer_size() > STDIN_HIGH_WATER:
            try:
                async with self._drain_lock:
                    with anyio.fail_after(STDIN_WRITE_TIMEOUT):
                        await stdin.drain()
            except TimeoutError:
                raise PluginUnavailable(
                    "unresponsive",
                    f"plugin {self.spec.plugin_id} has not read its input for {STDIN_WRITE_TIMEOUT:.0f} s",
                ) from None
            except (ConnectionError, BrokenPipeError):
                raise PluginUnavailable("restarting", f"plugin {self.spec.plugin_id} is not running") from None

    # --- readers ---------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        monotonic = time.monotonic
        route = self._link.feed if self._link is not None else self.router.feed
        try:
            async for item in LineReader(ReaderStream(self._process.stdout), self.max_line):
                self.last_activity = monotonic()
                route(item)
        finally:
            self._stdout_done.set()

    def _heartbeat(self) -> None:
        if self.ready_at is None:
            self.ready_at = time.monotonic()
            self.settled.set()

    async def _read_stderr(self) -> None:
        stream = ReaderStream(self._process.stderr)
        partial = b""
        try:
            while True:
                try:
                    chunk = await stream.receive(65536)
                except anyio.EndOfStream:
                    break
                self.last_activity = time.monotonic()
                self.stderr_tail.add(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                if lines:  # lines that came together (a traceback, say) make one record
                    self._log_stderr(b"\n".join(line[:STDERR_LINE_MAX] for line in lines))
                if len(partial) > STDERR_LINE_MAX:
                    self._log_stderr(partial[:STDERR_LINE_MAX])
                    partial = b""
                pause = self._read_budget.spend(len(chunk))
                if pause:
                    await anyio.sleep(pause)
            if partial:
                self._log_stderr(partial[:STDERR_LINE_MAX])
            if self.stderr_unlogged:
                self._log_stderr(b"")
        finally:
            self._stderr_done.set()

    def _log_stderr(self, lines: bytes) -> None:
        if lines and not self._log_budget.try_spend(len(lines)):
            self.stderr_unlogged += len(lines)
            return
        if self.stderr_unlogged:
            self.logger.warning(
                "%d bytes of stderr were not logged (over %d KiB/s; the tail is kept)",
                self.stderr_unlogged,
                STDERR_LOG_RATE // 1024,
            )
            self.stderr_unlogged = 0
        text = lines.decode("utf-8", "replace").strip("\n").rstrip()
        if text.strip():
            self.logger.warning("%s", text)
