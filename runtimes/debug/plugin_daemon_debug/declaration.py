"""From a registration to a validated declaration, its assets and its identity (protocol.md §2.2).

The manifest and providers get the checks an uploaded package gets (``plugin_daemon.packages``),
icons are rewritten to media ids the same way, and the identity is
``author/name:version@sha256(json(declaration) + tenant_id)``: the same plugin connected by two
tenants is two identities, and any change to its declaration is a new one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from plugin_daemon.packages import PackageError, PluginIdentifier, declaration_from_parts, remap_icons

from .handshake import Refused, Registration


@dataclass(frozen=True)
class DebugPlugin:
    """A registered debugging plugin, ready to install."""

    tenant_id: str
    identifier: str
    plugin_id: str
    declaration: dict[str, Any]
    media: dict[str, bytes]  # media id → content
    protocol: str | None = None  # None = the SDK's; else a codec's name (line/1)


def identity_checksum(declaration: dict[str, Any], tenant_id: str) -> str:
    return hashlib.sha256(orjson.dumps(declaration, option=orjson.OPT_SORT_KEYS) + tenant_id.encode()).hexdigest()


def build_plugin(registration: Registration) -> DebugPlugin:
    """Validate what was registered; raise :class:`Refused` with the reason the plugin is told."""
    try:
        declaration = declaration_from_parts(registration.manifest, registration.providers)
    except PackageError as exc:
        raise Refused(f"register failed, invalid manifest detected: {exc.message}") from None
    try:
        media = remap_icons(declaration, registration.assets)
    except PackageError as exc:
        raise Refused(f"assets remap failed, invalid assets data, cannot remap: {exc.message}") from None
    checksum = identity_checksum(declaration, registration.tenant_id)
    text = f"{declaration['author']}/{declaration['name']}:{declaration['version']}@{checksum}"
    try:
        identifier = PluginIdentifier.parse(text)
    except PackageError as exc:  # the manifest checks make this unreachable; keep the promise anyway
        raise Refused(f"register failed, invalid manifest detected: {exc.message}") from None
    return DebugPlugin(
        registration.tenant_id, str(identifier), identifier.plugin_id, declaration, media, registration.protocol
    )
