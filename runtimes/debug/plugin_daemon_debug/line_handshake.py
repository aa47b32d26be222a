"""Reading the registration of a debugging plugin that speaks ``line/1`` (docs/line-protocol.md §9).

Its first line is ``{"type": "auth", "api_key", "plugin_id"}``: small, so it is read under the same
pre-key limits as the SDK's handshake (the listener reads it). Once the key is accepted, one
``{"type": "declaration", "manifest", "declarations", "assets"}`` line follows, bound by the limits
of a registration (line size, assets size and count, nesting depth, the registration deadline and
byte budget). What it holds is what the SDK sends in its frames, so the same validation follows.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from plugin_daemon.protocol.codecs.line1 import PROTOCOL
from plugin_daemon.protocol.framing import LineReader, OversizeLine

from .handshake import (
    DECLARATION_FRAMES,
    MAX_ASSET_NAME,
    MAX_DECLARATION_DEPTH,
    Authenticate,
    Charge,
    Refused,
    Registration,
    nests_deeper,
)

AUTH = "auth"
DECLARATION = "declaration"
#: ``declarations`` keys: the provider kinds (tool, model, endpoint...), as the SDK's frames name them.
PROVIDER_KINDS = frozenset(DECLARATION_FRAMES.values())


def is_line_auth(first: bytes) -> bool:
    """Whether the first line of a debug connection is a ``line/1`` ``auth`` (else: the SDK's)."""
    line = first.split(b"\n", 1)[0]
    if b'"auth"' not in line:
        return False
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == AUTH


def auth_failed(message: str) -> str:
    """The refusal line a ``line/1`` plugin is told (without its newline)."""
    return orjson.dumps({"type": "auth_failed", "message": message}).decode()


def auth_success(connection_id: str) -> bytes:
    return orjson.dumps({"type": "auth_success", "session_id": connection_id})


async def _next_line(reader: LineReader) -> bytes:
    async for line in reader:
        if isinstance(line, OversizeLine):
            raise Refused(f"handshake failed, a registration line is longer than {reader.max_size} bytes")
        return line
    raise Refused("handshake failed, the connection ended before the registration did")


def _message(line: bytes, expected: str) -> dict[str, Any]:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict) or message.get("type") != expected:
        raise Refused(f"handshake failed, expected a {expected} message")
    return message


async def read_line_registration(
    reader: LineReader,
    authenticate: Authenticate,
    *,
    max_assets: int,
    max_asset_files: int = 10_000,
    charge: Charge | None = None,
) -> Registration:
    """Read ``auth`` and ``declaration``; return what was registered, or raise :class:`Refused`."""
    auth = _message(await _next_line(reader), AUTH)
    key, plugin_id = auth.get("api_key"), auth.get("plugin_id")
    if not isinstance(key, str) or not isinstance(plugin_id, str):
        raise Refused("handshake failed, auth needs api_key and plugin_id")
    tenant_id = await authenticate(key)
    line = await _next_line(reader)
    if charge is not None:
        charge(len(line))
    declaration = _message(line, DECLARATION)
    manifest, declarations, assets = (
        declaration.get("manifest"),
        declaration.get("declarations"),
        declaration.get("assets"),
    )
    if not isinstance(manifest, dict):
        raise Refused("register failed, invalid manifest detected: the declaration needs a manifest object")
    if not isinstance(declarations, dict) or not declarations:
        raise Refused("no registration transferred, cannot initialize")
    if nests_deeper(manifest, MAX_DECLARATION_DEPTH) or nests_deeper(declarations, MAX_DECLARATION_DEPTH):
        raise Refused(
            f"register failed, invalid manifest detected: nests more than {MAX_DECLARATION_DEPTH} levels deep"
        )
    if f"{manifest.get('author')}/{manifest.get('name')}" != plugin_id:
        raise Refused(f"register failed, plugin_id {plugin_id!r} is not the manifest's author/name")
    providers: dict[str, Any] = {}
    for kind, listed in declarations.items():
        if kind not in PROVIDER_KINDS:
            raise Refused(
                f"register failed, unknown declaration kind {kind!r}; known: {', '.join(sorted(PROVIDER_KINDS))}"
            )
        if not isinstance(listed, list):
            raise Refused(f"{kind} register failed, invalid {kind} declaration: expected a list")
        if listed:
            providers[kind] = listed[0]  # as for the SDK: only the first provider counts
    return Registration(tenant_id, manifest, providers, _assets(assets, max_assets, max_asset_files), PROTOCOL)


def _assets(assets: Any, max_assets: int, max_asset_files: int) -> dict[str, bytes]:
    if assets is None:
        return {}
    if not isinstance(assets, dict):
        raise Refused("transfer assets failed, error: assets must be an object of file name to base64")
    if len(assets) > max_asset_files:
        raise Refused(f"transfer assets failed, error: more than {max_asset_files} asset files")
    if sum(len(data) for data in assets.values() if isinstance(data, str)) > max_assets:
        raise Refused(f"assets too large, at most {max_assets // (1024 * 1024)}MB")
    decoded = {}
    for name, data in assets.items():
        if not name or len(name) > MAX_ASSET_NAME or not isinstance(data, str):
            raise Refused("transfer assets failed, error: each asset needs a file name and base64 data")
        try:
            decoded[name] = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused(f"assets decode failed, error: {exc}") from None
    return decoded
