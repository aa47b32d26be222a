"""Running an install command under two deadlines, keeping a bounded tail of its output.

The inactivity deadline (``PYTHON_ENV_INIT_TIMEOUT``) restarts with every byte of output, so a
slow but progressing install of a heavy plugin is never killed, while a stalled download is;
the hard deadline (``PYTHON_ENV_INIT_HARD_TIMEOUT``) bounds the whole command.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from .sandbox import Confinement
from .spawning import ReaderStream, signal_group, spawn

#: Bytes of output kept per command.
OUTPUT_KEEP = 64 * 1024
#: After the command exits, how long its output may still be drained.
DRAIN_GRACE = 2.0


class OutputTail:
    """The last ``keep`` bytes written to it."""

    __slots__ = ("_buf", "_keep", "total")

    def __init__(self, keep: int) -> None:
        self._buf = bytearray()
        self._keep = keep
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        if len(self._buf) > 2 * self._keep:
            del self._buf[: len(self._buf) - self._keep]

    def text(self, limit: int | None = None) -> str:
        limit = min(limit or self._keep, self._keep)
        data = bytes(self._buf[-limit:])
        if self.total > len(data) and b"\n" in data[:200]:
            data = data[data.index(b"\n") + 1 :]  # start at a line boundary
        return data.decode("utf-8", "replace")


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None
    output: str
    #: Why the command was killed: "inactive" or "hard", or None when it ended by itself.
    killed: str | None


async def run_watched(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    inactivity_timeout: float,
    hard_timeout: float,
    on_output: Callable[[], None] | None = None,
    confinement: Confinement | None = None,
) -> CommandResult:
    """Run ``argv`` (stdout and stderr merged) and return its exit code and output tail."""
    process = await spawn(argv, cwd=cwd, env=env, merge_stderr=True, confinement=confinement)
    assert process.stdout is not None
    tail = OutputTail(OUTPUT_KEEP)
    last_output = time.monotonic()
    killed: str | None = None
    drained = anyio.Event()

    async def pump() -> None:
        nonlocal last_output
        stream = ReaderStream(process.stdout)  # type: ignore[arg-type]
        try:
            while True:
                try:
                    chunk = await stream.receive(OUTPUT_KEEP)
                except anyio.EndOfStream:
                    return
                tail.add(chunk)
                last_output = time.monotonic()
                if on_output is not None:
                    on_output()
        finally:
            drained.set()

    async def watch_inactivity() -> None:
        nonlocal killed
        tick = max(0.05, min(1.0, inactivity_timeout / 4))
        while True:
            await anyio.sleep(tick)
            if time.monotonic() - last_output > inactivity_timeout:
                killed = "inactive"
                signal_group(process.pid, signal.SIGKILL)
                return

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(pump)
            group.start_soon(watch_inactivity)
            with anyio.move_on_after(hard_timeout) as deadline:
                await process.wait()
            if deadline.cancelled_caught:
                killed = "hard"
            # Kill what is left of the group (leader on a hard timeout, stray grandchildren).
            signal_group(process.pid, signal.SIGKILL)
            with anyio.move_on_after(DRAIN_GRACE):
                await drained.wait()
            group.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            signal_group(process.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await process.wait()
    return CommandResult(process.returncode, tail.text(), killed)
