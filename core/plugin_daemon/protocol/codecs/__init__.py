"""Wire codecs: how a plugin process speaks, when it does not speak the SDK's protocol.

The core, the router and the runtimes speak the Dify plugin protocol (the SDK's session frames,
:mod:`plugin_daemon.protocol.messages`). A codec translates one plugin connection's lines to
and from it, so nothing else changes: :class:`CodecLink` sits between a runtime's reader/writer
and its :class:`~plugin_daemon.protocol.router.SessionRouter`. The SDK protocol needs no codec
and takes no detour (its connections never build a link).

A codec is a factory of :class:`LineCodec` objects (one per connection, they may keep state),
registered by name in :data:`CODECS`; ``line/1`` ships with the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio

from plugin_daemon.protocol.framing import OversizeLine
from plugin_daemon.protocol.router import SessionRouter, Writer

#: The name of the SDK's own protocol (the default; it has no codec).
SDK_PROTOCOL = "sdk"


class LineCodec(Protocol):
    """One connection's translation between a plugin's own lines and the SDK protocol's."""

    def encode(self, line: bytes) -> tuple[bytes | None, list[bytes]]:
        """A daemon → plugin line of the SDK protocol (request, backwards answer) → the line to
        write to the plugin (None: nothing), and SDK-protocol lines to route back at once (the
        codec's own answers, e.g. refusing a request it cannot carry)."""

    def decode(self, line: bytes) -> list[bytes]:
        """A plugin → daemon line → the SDK-protocol lines it stands for (maybe none). A line that
        is not the codec's is returned as is, so the router treats it as stray output."""

    def heartbeat(self) -> bytes | None:
        """The line the daemon sends to probe liveness, or None when the plugin beats by itself."""


#: Builds the codec of one plugin connection.
CodecFactory = Callable[[], LineCodec]

#: protocol name → codec factory: the built-in ones, and those extensions register through the
#: ``plugin_daemon_register_codecs`` hook (added when the daemon loads its extensions).
CODECS: dict[str, CodecFactory] = {}


def register_codec(protocol: str, factory: CodecFactory) -> None:
    """Add a codec; a name already taken by another codec is refused."""
    if protocol == SDK_PROTOCOL or CODECS.get(protocol, factory) is not factory:
        raise ValueError(f"two codecs for the plugin protocol {protocol!r}")
    CODECS[protocol] = factory


def codec_for(protocol: str) -> CodecFactory:
    """The codec factory of ``protocol`` (``line/1``...); KeyError names the known ones."""
    try:
        return CODECS[protocol]
    except KeyError:
        known = ", ".join(sorted([SDK_PROTOCOL, *CODECS]))
        raise KeyError(f"unknown plugin protocol {protocol!r}; known: {known}") from None


def runner_protocol(declaration: dict[str, object]) -> str | None:
    """``meta.runner.protocol`` of a plugin's declaration; None for the SDK protocol."""
    meta = declaration.get("meta")
    runner = meta.get("runner") if isinstance(meta, dict) else None
    protocol = runner.get("protocol") if isinstance(runner, dict) else None
    return str(protocol) if protocol and protocol != SDK_PROTOCOL else None


class CodecLink:
    """Puts a codec between a connection and its router.

    Give the router :meth:`write` as its writer (requests and backwards answers pass through the
    codec on their way out) and feed the connection's lines to :meth:`feed` instead of the
    router's own ``feed``. Set :attr:`router` right after building the router.
    """

    __slots__ = ("codec", "_write", "router")

    def __init__(self, codec: LineCodec, write: Writer) -> None:
        self.codec = codec
        self._write = write
        self.router: SessionRouter | None = None

    async def write(self, line: bytes) -> None:
        outgoing, answers = self.codec.encode(line)
        if outgoing is not None:
            await self._write(outgoing)
        if answers and self.router is not None:
            for answer in answers:
                self.router.feed(answer)

    def feed(self, item: bytes | OversizeLine) -> None:
        router = self.router
        if router is None:
            return
        if isinstance(item, OversizeLine):
            router.feed(item)
            return
        for line in self.codec.decode(item):
            router.feed(line)


async def send_heartbeats(codec: LineCodec, write: Writer, interval: float, alive: Callable[[], bool]) -> None:
    """Probe a codec's plugin now (its first answer makes it ready), then every ``interval``
    seconds while ``alive()``; a codec plugin answers heartbeats rather than sending them.
    Returns when the codec has no heartbeat or the plugin cannot be written to."""
    from plugin_daemon.runtime import PluginUnavailable

    line = codec.heartbeat()
    if line is None:
        return
    while alive():
        try:
            await write(line)
        except PluginUnavailable:
            return
        await anyio.sleep(interval)


def _register_builtin() -> None:
    from plugin_daemon.protocol.codecs.line1 import PROTOCOL, Line1Codec

    register_codec(PROTOCOL, Line1Codec)


_register_builtin()
