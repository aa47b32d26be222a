"""Dify ``.difybundle`` bundles: a zip whose ``manifest.yaml`` (``type: bundle``) lists plugins.

A dependency is one of three kinds, each with its own ``value``:

- ``github``: ``repo_pattern: owner/repo:version/asset.difypkg`` (a release asset);
- ``marketplace``: ``marketplace_pattern: organization/plugin:version``;
- ``package``: ``path: name.difypkg``, a package carried in the bundle under ``_assets/``.

Versions are exact (``1.2.3``, ``1.2.3-beta``), caret or tilde (``^1.2.3``, ``~1.2.3``), with
wildcards (``1.x.x``) or a range (``1.0.0-2.0.0``), as the Go daemon accepts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .archive import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE, read_archive
from .assets import ASSETS_FOLDER
from .errors import PackageError
from .yaml_loader import MAX_SIZE as MAX_YAML_SIZE
from .yaml_loader import load_yaml, scalar_text

_VERSION = r"\d{1,4}(?:\.\d{1,4}){2}(?:-\w{1,16})?"
_WILDCARD = r"(?:\d{1,4}|[xX])"
_VERSION_PATTERN = rf"(?:[~^]?{_VERSION}|{_WILDCARD}(?:\.{_WILDCARD}){{2}}|{_VERSION}-{_VERSION})"
_PLUGIN = r"([a-z0-9_-]{1,64})/([a-z0-9_-]{1,128})"
GITHUB_PATTERN = re.compile(rf"{_PLUGIN}:({_VERSION_PATTERN})/([^/]+)", re.ASCII)
MARKETPLACE_PATTERN = re.compile(rf"{_PLUGIN}:({_VERSION_PATTERN})", re.ASCII)
GITHUB_ADDRESS = "https://github.com"


#: Dependencies one bundle may list at most (``MAX_BUNDLE_DEPENDENCIES``).
DEFAULT_MAX_DEPENDENCIES = 256


@dataclass(frozen=True)
class BundleDependency:
    type: str  # "github", "marketplace" or "package"
    value: dict[str, str]  # what Dify is told of a github or marketplace dependency; {"path": ...} for a package


@dataclass(frozen=True)
class DecodedBundle:
    manifest: dict[str, Any]
    dependencies: list[BundleDependency]
    #: path under _assets/ -> the .difypkg it carries, once each however often it is listed
    packages: dict[str, bytes]


def decode_bundle(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_dependencies: int = DEFAULT_MAX_DEPENDENCIES,
    max_yaml_size: int = MAX_YAML_SIZE,
) -> DecodedBundle:
    """Check and read a .difybundle; raise PackageError saying what is wrong.

    Only manifest.yaml and the packages it lists are decompressed, each once.
    """
    try:
        files = read_archive(
            data, max_size=max_size, max_entries=max_entries, wanted=_is_manifest, max_file_size=max_yaml_size
        ).files
    except PackageError as exc:
        raise PackageError(f"bundle: {exc.message}") from None
    if "manifest.yaml" not in files:
        raise PackageError("bundle: manifest.yaml is missing from the root of the bundle")
    manifest = load_yaml(files["manifest.yaml"], "bundle manifest.yaml", max_size=max_yaml_size)
    if not isinstance(manifest, dict):
        raise PackageError("bundle manifest.yaml: must be a mapping")
    if scalar_text(manifest.get("type")) != "bundle":
        raise PackageError(f"bundle manifest.yaml: type must be 'bundle', not {manifest.get('type')!r}")
    listed = manifest.get("dependencies")
    if not isinstance(listed, list):
        raise PackageError("bundle manifest.yaml: dependencies must be a list")
    if len(listed) > max_dependencies:
        raise PackageError(
            f"bundle manifest.yaml: {len(listed)} dependencies, more than the limit of {max_dependencies} "
            "(MAX_BUNDLE_DEPENDENCIES)"
        )
    dependencies = [_dependency(number, item) for number, item in enumerate(listed, 1)]
    carried = {ASSETS_FOLDER + dependency.value["path"] for dependency in dependencies if dependency.type == "package"}
    try:
        files = read_archive(data, max_size=max_size, max_entries=max_entries, wanted=carried.__contains__).files
    except PackageError as exc:
        raise PackageError(f"bundle: {exc.message}") from None
    for number, dependency in enumerate(dependencies, 1):
        if dependency.type == "package" and ASSETS_FOLDER + dependency.value["path"] not in files:
            raise PackageError(
                f"bundle manifest.yaml: dependency {number}: package {dependency.value['path']!r} is not in the "
                f"bundle's {ASSETS_FOLDER} folder"
            )
    packages = {name.removeprefix(ASSETS_FOLDER): content for name, content in files.items()}
    return DecodedBundle(manifest=manifest, dependencies=dependencies, packages=packages)


def _is_manifest(name: str) -> bool:
    return name == "manifest.yaml"


def _dependency(number: int, item: Any) -> BundleDependency:
    where = f"bundle manifest.yaml: dependency {number}"
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
        raise PackageError(f"{where}: must be a mapping with 'type' and a 'value' mapping")
    kind, value = item.get("type"), item["value"]
    if kind == "github":
        match = GITHUB_PATTERN.fullmatch(_text(value, "repo_pattern", where))
        if match is None:
            raise PackageError(f"{where}: repo_pattern must look like owner/repo:1.0.0/plugin.difypkg")
        owner, repo, release, asset = match.groups()
        return BundleDependency(
            "github",
            {
                "repo_address": f"{GITHUB_ADDRESS}/{owner}/{repo}",
                "repo": f"{owner}/{repo}",
                "release": release,
                "packages": asset,
            },
        )
    if kind == "marketplace":
        match = MARKETPLACE_PATTERN.fullmatch(_text(value, "marketplace_pattern", where))
        if match is None:
            raise PackageError(f"{where}: marketplace_pattern must look like organization/plugin:1.0.0")
        organization, plugin, version = match.groups()
        return BundleDependency("marketplace", {"organization": organization, "plugin": plugin, "version": version})
    if kind == "package":
        return BundleDependency("package", {"path": _text(value, "path", where)})
    raise PackageError(f"{where}: type must be github, marketplace or package, not {kind!r}")


def _text(value: dict[str, Any], key: str, where: str) -> str:
    text = scalar_text(value.get(key))
    if not isinstance(text, str) or not text:
        raise PackageError(f"{where}: {key} is required")
    return text
