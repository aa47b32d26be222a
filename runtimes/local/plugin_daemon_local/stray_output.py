"""Lines a plugin writes on stdout that are not protocol frames (a ``print``, a traceback).

They are kept in a bounded tail, which launch-failure messages carry beside the stderr tail,
and logged in bursts: the lines that come together (a 60-line traceback) make one record,
written once no more came for ``FLUSH_DELAY`` seconds, or at once past ``FLUSH_LINES`` lines.
"""

from __future__ import annotations

import logging

import anyio

from .commands import OutputTail

#: Bytes of stray stdout kept for error messages.
STRAY_TAIL_BYTES = 4096
#: Quiet time after which the lines waiting are logged as one record.
FLUSH_DELAY = 0.2
#: Lines after which they are logged without waiting.
FLUSH_LINES = 200


class StrayOutput:
    """The stray stdout lines of one plugin process."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.tail = OutputTail(STRAY_TAIL_BYTES)
        self._pending: list[str] = []
        self._arrived = anyio.Event()

    def add(self, line: str) -> None:
        """Take one line (the router's ``on_unreadable``)."""
        self.tail.add(line.encode("utf-8", "replace") + b"\n")
        self._pending.append(line)
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        else:
            self._arrived.set()

    def flush(self) -> None:
        """Log the lines waiting, as one record."""
        lines, self._pending = self._pending, []
        if lines:
            self.logger.warning(
                "wrote %d line(s) on stdout that are not protocol frames:\n%s", len(lines), "\n".join(lines)
            )

    async def log_in_bursts(self) -> None:
        """Run beside the stdout reader: log each burst once it is over (flush the rest at the end)."""
        try:
            while True:
                await self._arrived.wait()
                self._arrived = anyio.Event()
                count = -1
                while count != len(self._pending):  # wait until a quiet FLUSH_DELAY passes
                    count = len(self._pending)
                    await anyio.sleep(FLUSH_DELAY)
                self.flush()
        finally:
            self.flush()

    def text(self) -> str:
        return self.tail.text().strip()
