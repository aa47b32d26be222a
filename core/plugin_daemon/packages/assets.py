"""Files under ``_assets/`` and the media ids the declaration's icon fields are rewritten to."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .errors import PackageError

ASSETS_FOLDER = "_assets/"
_LANGUAGES = ("en_US", "zh_Hans", "ja_JP", "pt_BR")
_MODEL_ICONS = ("icon_small", "icon_large", "icon_small_dark", "icon_large_dark")


def media_id(name: str, content: bytes) -> str:
    """``hex(sha256(content + name)) + extension``, as the Go daemon's media bucket names an asset."""
    return hashlib.sha256(content + name.encode("utf-8")).hexdigest() + extension(name)


def extension(name: str) -> str:
    """Go's filepath.Ext: from the last '.' of the last path element, or ''."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if dot >= 0 else ""


def package_assets(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Asset name (path under ``_assets/``) -> content."""
    return {path[len(ASSETS_FOLDER) :]: content for path, content in files.items() if path.startswith(ASSETS_FOLDER)}


def remap_icons(declaration: dict[str, Any], assets: Mapping[str, bytes]) -> dict[str, bytes]:
    """Rewrite the icon fields the Go daemon rewrites to media ids; return media id -> bytes of all assets.

    An icon field naming a file that is not in ``_assets/`` is an error, as in the Go daemon.
    """

    def remap(name: Any, field: str) -> Any:
        if not name:
            return name
        if not isinstance(name, str) or name not in assets:
            raise PackageError(f"{field} refers to {ASSETS_FOLDER}{name}, which is not in the package")
        return media_id(name, assets[name])

    model = declaration.get("model")
    if model:
        for key in _MODEL_ICONS:
            icon = model.get(key)
            if icon is not None and not isinstance(icon, dict):
                raise PackageError(f"model provider field '{key}' must map languages to file names, got {icon!r}")
            if isinstance(icon, dict):
                for language in _LANGUAGES:
                    if icon.get(language):
                        icon[language] = remap(icon[language], f"model provider field '{key}.{language}'")
    for key in ("tool", "agent_strategy", "trigger"):
        provider = declaration.get(key)
        if provider:
            identity = provider["identity"]
            for field in ("icon", "icon_dark"):
                if identity.get(field):
                    identity[field] = remap(identity[field], f"{key} provider field 'identity.{field}'")
    datasource = declaration.get("datasource")
    if datasource:
        identity = datasource["identity"]
        if identity.get("icon"):
            identity["icon"] = remap(identity["icon"], "datasource provider field 'identity.icon'")
        for index, item in enumerate(datasource.get("datasources") or []):
            item_identity = item.get("identity") if isinstance(item, dict) else None
            if isinstance(item_identity, dict) and item_identity.get("icon"):
                item_identity["icon"] = remap(
                    item_identity["icon"], f"datasource field 'datasources[{index}].identity.icon'"
                )
    for field in ("icon", "icon_dark"):
        declaration[field] = remap(declaration.get(field), f"manifest.yaml field '{field}'")
    return {media_id(name, content): content for name, content in assets.items()}
