"""What a debugging connection may cost before its key is accepted, and while its registration is read.

Before its key is accepted a connection is a stranger. It may send one short line
(``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_MAX_SIZE``) within a short time
(``PLUGIN_REMOTE_INSTALLING_HANDSHAKE_LINE_TIMEOUT``), and one address may have only
``PLUGIN_REMOTE_INSTALLING_MAX_HANDSHAKES_PER_ADDRESS`` strangers: one more closes its oldest. When
the listener is full (``PLUGIN_REMOTE_INSTALLING_MAX_CONN``) a newcomer closes the stranger that has
waited longest, of any address; only when no stranger is left is the newcomer told the server is busy.
So silent connections never keep a developer out: the SDK sends its key at once and leaves the
strangers within a round trip.

Once the key is accepted, the registrations being read hold at most
``PLUGIN_REMOTE_INSTALLING_MAX_REGISTERING_BYTES`` together (each counts the lines it has read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.abc import ByteReceiveStream
from plugin_daemon.protocol.framing import LineTooLong

from .handshake import Refused

BUSY = "server is busy now, please try again later"
#: Bytes read and let go (registrations, refused peers drained) after which freed memory is given back
#: (measured on a daemon process without it: 16 registrations of 44 MiB at once left 4 MiB more after a
#: first round and 16 MiB after a second, 128 refused peers of 5 MiB each 18 MiB; nothing with it).
GIVE_BACK_AFTER = 8 * 1024 * 1024
CROWDED_ADDRESS = "handshake failed, too many connections from {address} are waiting for their handshake"
CROWDED = "handshake failed, the server is full and this connection waited longest for its handshake"


@dataclass(eq=False)
class Stranger:
    """A connection whose key has not been accepted yet; ``scope`` is cancelled to close it early."""

    address: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: the line it is told when it was closed to make room (None while it waits)
    evicted: str | None = None


class Admission:
    def __init__(self, per_address: int, max_registering_bytes: int) -> None:
        self.per_address = max(1, per_address)
        self.max_registering_bytes = max_registering_bytes
        self._strangers: dict[Stranger, None] = {}  # oldest first
        self._by_address: dict[str, list[Stranger]] = {}
        self.registering_bytes = 0
        self._since_trim = 0  # bytes read and let go since the heap was last trimmed

    @property
    def strangers(self) -> int:
        return len(self._strangers)

    # --- before the key ---------------------------------------------------------------------

    def arrive(self, address: str, *, full: bool) -> Stranger | None:
        """A new connection waits for its handshake; None when it must be told the server is busy."""
        same = self._by_address.get(address, [])
        if len(same) >= self.per_address:
            self._evict(same[0], CROWDED_ADDRESS.format(address=address))
        elif full:
            if not self._strangers:
                return None
            self._evict(next(iter(self._strangers)), CROWDED)
        stranger = Stranger(address)
        self._strangers[stranger] = None
        self._by_address.setdefault(address, []).append(stranger)
        return stranger

    def leave(self, stranger: Stranger) -> None:
        """The stranger has sent its handshake line, or is gone (idempotent)."""
        if stranger not in self._strangers:
            return
        del self._strangers[stranger]
        same = self._by_address[stranger.address]
        same.remove(stranger)
        if not same:
            del self._by_address[stranger.address]

    def _evict(self, stranger: Stranger, line: str) -> None:
        stranger.evicted = line
        stranger.scope.cancel()
        self.leave(stranger)

    # --- after the key -------------------------------------------------------------------------

    def charge(self, size: int) -> None:
        """Count ``size`` more bytes held by a registration being read; Refused past the budget."""
        if self.registering_bytes + size > self.max_registering_bytes:
            raise Refused(f"{BUSY} (too many registrations are being read at once)")
        self.registering_bytes += size

    def release(self, size: int) -> None:
        self.registering_bytes -= size

    def let_go(self, size: int) -> bool:
        """``size`` bytes were read and are let go; True when so many were that the heap should be trimmed."""
        self._since_trim += size
        if self._since_trim < GIVE_BACK_AFTER:
            return False
        self._since_trim = 0
        return True


async def read_first_line(stream: ByteReceiveStream, limit: int) -> bytes:
    """The first non-empty line (with its newline) and what came after it in the same reads.

    Never asks for more than ``limit`` + 1 bytes in all, so a stranger costs a few kilobytes at most.
    """
    buffer = b""
    while True:
        newline = buffer.find(b"\n")
        if newline >= 0:
            if buffer[:newline].strip():
                return buffer
            buffer = buffer[newline + 1 :]
            continue
        if len(buffer) > limit:
            raise LineTooLong(len(buffer), limit)
        buffer += await stream.receive(limit + 1 - len(buffer))
