"""Reading a debugging plugin's registration, exactly as the SDK sends it (protocol.md §2.2).

Frames are ``{"type": ..., "data": ...}`` lines: ``handshake`` (the key) first, then
``manifest_declaration``, the ``<category>_declaration`` lists, ``asset_chunk`` pieces and ``end``.
Anything wrong raises :class:`Refused` with the plain-text line the SDK prints before the
connection is closed. The caller owns the deadline.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from plugin_daemon.packages import PROVIDER_KEYS
from plugin_daemon.protocol.framing import LineReader, OversizeLine

#: ``<key>_declaration`` frame type → declaration key
DECLARATION_FRAMES = {f"{key}_declaration": key for key in PROVIDER_KEYS}
#: Longest asset file name accepted.
MAX_ASSET_NAME = 255
#: Deepest nesting of a manifest or provider declaration (as of a YAML file in a package).
MAX_DECLARATION_DEPTH = 200


class Refused(Exception):
    """The registration is refused; ``line`` is what the plugin is told (no newline)."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


@dataclass
class Registration:
    """What a plugin sent before ``end``."""

    tenant_id: str
    manifest: dict[str, Any]
    providers: dict[str, Any] = field(default_factory=dict)  # declaration key → providers[0]
    assets: dict[str, bytes] = field(default_factory=dict)  # file name → content
    #: the protocol the plugin speaks after registering: None = the SDK's, else a codec's name
    protocol: str | None = None


#: Checks a key; returns its tenant or raises Refused.
Authenticate = Callable[[str], Awaitable[str]]
#: Counts the bytes of a line read after the key; raises Refused when they are too many.
Charge = Callable[[int], None]


class _Reading:
    def __init__(self, max_assets: int, max_asset_files: int) -> None:
        self.max_assets = max_assets
        self.max_asset_files = max_asset_files
        self.tenant_id: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.transferred: set[str] = set()
        self.providers: dict[str, Any] = {}
        # one growing buffer per file: thousands of small chunks kept alive would fragment the heap
        self.assets: dict[str, bytearray] = {}
        self.assets_size = 0  # base64 characters received, as the Go daemon counts

    def declaration(self, kind: str, key: str, data: Any) -> None:
        if key in self.transferred:
            raise Refused(f"{kind.replace('_', ' ')} already registered")
        if not isinstance(data, list):
            raise Refused(f"{key} register failed, invalid {key} declaration: expected a list")
        self.transferred.add(key)
        if data:
            self.providers[key] = data[0]  # as the Go daemon: only the first provider counts

    def asset(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise Refused("transfer assets failed, error: asset_chunk data must be an object")
        name, chunk = data.get("filename"), data.get("data")
        if not isinstance(name, str) or not name or len(name) > MAX_ASSET_NAME or not isinstance(chunk, str):
            raise Refused("transfer assets failed, error: asset_chunk needs a filename and base64 data")
        self.assets_size += len(chunk)
        if self.assets_size > self.max_assets:
            raise Refused(f"assets too large, at most {self.max_assets // (1024 * 1024)}MB")
        if name not in self.assets and len(self.assets) >= self.max_asset_files:
            raise Refused(f"transfer assets failed, error: more than {self.max_asset_files} asset files")
        try:
            content = base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused(f"assets decode failed, error: {exc}") from None
        self.assets.setdefault(name, bytearray()).extend(content)


async def read_registration(
    reader: LineReader,
    authenticate: Authenticate,
    *,
    max_assets: int,
    max_asset_files: int = 10_000,
    charge: Charge | None = None,
) -> Registration:
    """Read frames up to ``end``; return what was registered, or raise :class:`Refused`."""
    state = _Reading(max_assets, max_asset_files)
    async for line in reader:
        if isinstance(line, OversizeLine):  # only when the reader is not strict
            raise Refused(f"handshake failed, a registration line is longer than {reader.max_size} bytes")
        if charge is not None and state.tenant_id is not None:
            charge(len(line))
        kind, data = _frame(line)
        if kind != "asset_chunk" and nests_deeper(data, MAX_DECLARATION_DEPTH):
            depth = MAX_DECLARATION_DEPTH
            raise Refused(f"register failed, invalid manifest detected: {kind} nests more than {depth} levels deep")
        if state.tenant_id is None:
            if kind != "handshake":
                raise Refused("handshake failed, registration message before handshake")
            key = data.get("key") if isinstance(data, dict) else None
            if not isinstance(key, str):
                raise Refused("handshake failed, invalid handshake message")
            state.tenant_id = await authenticate(key)
        elif kind == "handshake":
            raise Refused("handshake failed, handshake already completed")
        elif kind == "manifest_declaration":
            if state.manifest is not None:
                raise Refused("declaration already registered")
            if not isinstance(data, dict):
                raise Refused("register failed, invalid manifest detected: manifest_declaration must be an object")
            state.manifest = data
        elif kind in DECLARATION_FRAMES:
            state.declaration(kind, DECLARATION_FRAMES[kind], data)
        elif kind == "asset_chunk":
            state.asset(data)
        elif kind == "end":
            if state.manifest is None:
                raise Refused("register failed, invalid manifest detected: no manifest_declaration was sent")
            if not state.transferred:
                raise Refused("no registration transferred, cannot initialize")
            assets = {name: bytes(content) for name, content in state.assets.items()}
            state.assets.clear()
            return Registration(state.tenant_id, state.manifest, state.providers, assets)
        # other frame types are ignored, as the Go daemon does
    raise Refused("handshake failed, the connection ended before the registration did")


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` has containers nested more than ``limit`` deep (without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            if isinstance(container, dict | list)
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, dict | list)
        ]
        if not level:
            return False
    return True


def _frame(line: bytes) -> tuple[str, Any]:
    try:
        frame = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise Refused("handshake failed, invalid handshake message") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise Refused("handshake failed, invalid handshake message")
    return frame["type"], frame.get("data")
