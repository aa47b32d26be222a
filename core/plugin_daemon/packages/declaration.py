"""The plugin declaration: manifest.yaml plus its expanded providers, in the JSON shape Dify parses."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from . import providers
from .errors import PackageError
from .manifest import MANIFEST, PROVIDER_LISTS, Manifest, parse_manifest
from .yaml_loader import MAX_SIZE as MAX_YAML_SIZE
from .yaml_loader import YamlFloat, YamlInt

# manifest `plugins` list -> declaration key, and how each provider file is expanded.
_PROVIDERS: dict[str, tuple[str, Callable[[providers.PackageFiles, str], dict[str, Any]]]] = {
    "tools": ("tool", providers.tool_provider),
    "models": ("model", providers.model_provider),
    "endpoints": ("endpoint", providers.endpoint_group),
    "agent_strategies": ("agent_strategy", providers.agent_strategy_provider),
    "datasources": ("datasource", providers.datasource_provider),
    "triggers": ("trigger", providers.trigger_provider),
}
# A plugin declaring one of these may declare nothing else (tool + endpoint is the one allowed pair).
_EXCLUSIVE = ("models", "agent_strategies", "datasources", "triggers")
# In the Go daemon's order of precedence: declaration key, manifest `plugins` list, category.
_CATEGORIES = (
    ("tool", "tools", "tool"),
    ("model", "models", "model"),
    ("datasource", "datasources", "datasource"),
    ("agent_strategy", "agent_strategies", "agent-strategy"),
    ("trigger", "triggers", "trigger"),
)


def plugin_category(declaration: Mapping[str, Any]) -> str:
    """The Go daemon's category: tool, model, datasource, agent-strategy, trigger, else extension."""
    plugins = declaration.get("plugins") or {}
    for key, plural, category in _CATEGORIES:
        if declaration.get(key) or plugins.get(plural):
            return category
    return "extension"


def build_declaration(files: Mapping[str, bytes], *, max_yaml_size: int = MAX_YAML_SIZE) -> dict[str, Any]:
    """Read, validate and expand manifest.yaml; ``verified`` is left False for the caller to set."""
    if MANIFEST not in files:
        raise PackageError(f"package has no {MANIFEST} at its root")
    package_files = providers.PackageFiles(files, max_yaml_size=max_yaml_size)
    manifest = parse_manifest(package_files.parse(MANIFEST))
    _check_combination(manifest)
    expanded: dict[str, dict[str, Any] | None] = {}
    for plural, (singular, expand) in _PROVIDERS.items():
        expanded[singular] = None
        for path in getattr(manifest.plugins, plural):
            # the Go daemon keeps the last one listed
            expanded[singular] = providers.typed_like_go(expand(package_files, path))
    declaration = _top_level(manifest) | {"verified": False} | expanded
    _fill_defaults(declaration)
    declaration["category"] = plugin_category(declaration)
    return to_json(declaration)


#: The declaration's provider keys, in the manifest's order.
PROVIDER_KEYS = tuple(singular for singular, _ in _PROVIDERS.values())
# What a provider sent already expanded must hold: its name field (None: any mapping).
_NAME_FIELDS = {
    "tool": "identity",
    "model": "provider",
    "endpoint": None,
    "agent_strategy": "identity",
    "datasource": "identity",
    "trigger": "identity",
}


def declaration_from_parts(manifest: Any, provider_declarations: Mapping[str, Any]) -> dict[str, Any]:
    """A declaration from a manifest mapping and already expanded providers, not from a zip.

    A plugin connecting in debug mode sends these (the manifest as a JSON object and one
    provider per key of :data:`PROVIDER_KEYS`). The manifest gets the same checks as a package's
    ``manifest.yaml``; each provider must be a mapping naming itself. Icons are not remapped here
    (see :func:`plugin_daemon.packages.remap_icons`). Raises PackageError.
    """
    parsed = parse_manifest(manifest)
    _check_combination(parsed)
    expanded: dict[str, Any] = {}
    for key in PROVIDER_KEYS:
        provider = provider_declarations.get(key)
        if provider is not None:
            _check_provider(key, provider)
        expanded[key] = provider
    declaration = _top_level(parsed) | {"verified": False} | to_json(expanded)
    for key, name_field in _NAME_FIELDS.items():
        if (
            name_field == "identity"
            and declaration[key] is not None
            and declaration[key]["identity"].get("tags") is None
        ):
            declaration[key]["identity"]["tags"] = []
    _fill_defaults(declaration)
    declaration["category"] = plugin_category(declaration)
    return to_json(declaration)


def _check_provider(key: str, provider: Any) -> None:
    where = f"{key} declaration"
    if not isinstance(provider, dict):
        raise PackageError(f"{where}: expected a mapping of fields, got {type(provider).__name__}")
    name_field = _NAME_FIELDS[key]
    if name_field == "identity":
        identity = provider.get("identity")
        if not isinstance(identity, dict) or not isinstance(identity.get("name"), str) or not identity["name"]:
            raise PackageError(f"{where}: field 'identity.name' is required")
    elif name_field is not None and (not isinstance(provider.get(name_field), str) or not provider[name_field]):
        raise PackageError(f"{where}: field '{name_field}' is required")


def _check_combination(manifest: Manifest) -> None:
    declared = [name for name in PROVIDER_LISTS if getattr(manifest.plugins, name)]
    if not declared:
        raise PackageError(f"{MANIFEST}: field 'plugins' must list at least one of {', '.join(PROVIDER_LISTS)}")
    for name in _EXCLUSIVE:
        others = [other for other in declared if other != name]
        if name in declared and others:
            raise PackageError(
                f"{MANIFEST}: 'plugins.{name}' cannot be combined with "
                f"{', '.join(f'plugins.{other}' for other in others)};"
                " only tools and endpoints may be combined"
            )


def _top_level(manifest: Manifest) -> dict[str, Any]:
    resource: dict[str, Any] = {"memory": manifest.resource.memory}
    if manifest.resource.permission is not None:
        resource["permission"] = manifest.resource.permission.model_dump(exclude_none=True)
    meta = manifest.meta
    return {
        "version": manifest.version,
        "type": manifest.type,
        "author": manifest.author,
        "name": manifest.name,
        "label": manifest.label,
        "description": manifest.description,
        "icon": manifest.icon,
        "icon_dark": manifest.icon_dark,
        "resource": resource,
        "plugins": {name: list(getattr(manifest.plugins, name)) for name in PROVIDER_LISTS},
        "meta": {
            "version": meta.version,
            "arch": list(meta.arch),
            "runner": {
                "language": meta.runner.language,
                "version": meta.runner.version,
                "entrypoint": meta.runner.entrypoint,
                # only when set: an SDK plugin's declaration keeps Go's shape
                **({"protocol": meta.runner.protocol} if meta.runner.protocol else {}),
            },
            "minimum_dify_version": meta.minimum_dify_version,
        },
        "tags": list(manifest.tags),
        "created_at": rfc3339(manifest.created_at),
        "privacy": manifest.privacy,
        "repo": manifest.repo,
    }


def _fill_defaults(declaration: dict[str, Any]) -> None:
    """The defaults the Go daemon's FillInDefaultValues puts in."""
    for key in ("tool", "trigger"):
        provider = declaration.get(key)
        if provider is None:
            continue
        identity = provider["identity"]
        description = identity.get("description")
        if not isinstance(description, dict) or not description.get("en_US"):
            identity["description"] = declaration["description"]
        if not identity.get("tags"):
            identity["tags"] = declaration["tags"]
    model = declaration.get("model")
    if model is not None and model.get("description") is None:
        model["description"] = declaration["description"]


def rfc3339(value: dt.datetime | dt.date) -> str:
    """Format like Go's time.Time JSON (RFC 3339, fractional seconds trimmed, 'Z' for UTC)."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset() or dt.timedelta(0)
    if not offset:
        return text + "Z"
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def to_json(value: Any) -> Any:
    """A deep copy made only of dict, list, str, int, float, bool and None."""
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, YamlInt):
        return int(value)
    if isinstance(value, YamlFloat):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return rfc3339(value)
    return copy.copy(value)
