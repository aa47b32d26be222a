"""manifest.yaml rules: every bad field gives a PackageError that names it and says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from plugin_daemon.packages import PackageError, decode_package

from tests.core.packages.packages_helpers import DELETE, MANIFEST, changed, to_yaml, tool_plugin, zip_files


def decode_error(files: dict[str, bytes]) -> str:
    with pytest.raises(PackageError) as caught:
        decode_package(zip_files(files))
    return caught.value.message


def manifest_error(**changes: Any) -> str:
    return decode_error(tool_plugin(changed(MANIFEST, **changes)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": "abc"}, "manifest.yaml: field 'version' must look like 1.2.3 (optionally 1.2.3-beta), got 'abc'"),
        ({"version": "1.2"}, "field 'version' must look like 1.2.3"),
        ({"version": "1.2.3.4"}, "field 'version' must look like 1.2.3"),
        ({"version": "12345.0.0"}, "field 'version' must look like 1.2.3"),
        ({"version": "1.0.0-" + "a" * 17}, "field 'version' must look like 1.2.3"),
        ({"version": "١.٢.٣"}, "field 'version' must look like 1.2.3"),  # non-ASCII digits
        ({"version": DELETE}, "manifest.yaml: field 'version' is required"),
        ({"type": "bundle"}, "manifest.yaml: field 'type' must be 'plugin', got 'bundle'"),
        ({"type": DELETE}, "field 'type' is required"),
        ({"author": "Bad Author"}, "field 'author' must be 1-64 characters of a-z, 0-9, '_' or '-', got 'Bad Author'"),
        ({"author": "a" * 65}, "field 'author' must be 1-64 characters"),
        ({"author": DELETE}, "field 'author' is required"),
        (
            {"author": "123e4567-e89b-12d3-a456-426614174000"},
            "field 'author' must not be a UUID (UUID authors are reserved for debugging plugins)",
        ),
        ({"author": "0123456789abcdef0123456789abcdef"}, "field 'author' must not be a UUID"),
        ({"name": "Demo.Plugin"}, "field 'name' must be 1-128 characters of a-z, 0-9, '_' or '-', got 'Demo.Plugin'"),
        ({"name": "a" * 129}, "field 'name' must be 1-128 characters"),
        ({"name": DELETE}, "field 'name' is required"),
        ({"label": DELETE}, "manifest.yaml: field 'label' is required"),
        ({"label": {"zh_Hans": "演示"}}, "field 'label' must have a non-empty en_US text"),
        ({"label": "Demo"}, "field 'label' must be a mapping of language to text"),
        ({"label": {"en_US": ["x"]}}, "field 'label' must map each language to text, but en_US is ['x']"),
        ({"description": DELETE}, "field 'description' is required"),
        ({"description": {"en_US": ""}}, "field 'description' must have a non-empty en_US text"),
        ({"icon": DELETE}, "field 'icon' is required"),
        ({"icon": ""}, "field 'icon' must not be empty"),
        ({"created_at": DELETE}, "field 'created_at' is required"),
        (
            {"created_at": "yesterday"},
            "field 'created_at' must be a date-time like 2024-01-01T00:00:00Z, got 'yesterday'",
        ),
        ({"resource": DELETE}, "field 'resource' is required"),
        ({"resource__memory": DELETE}, "manifest.yaml: field 'resource.memory' is required"),
        ({"resource__memory": "lots"}, "field 'resource.memory' must be a whole number, got 'lots'"),
        ({"resource__memory": -1}, "field 'resource.memory' must be a positive number of bytes, got -1"),
        (
            {"resource__permission__storage__size": 1023},
            "field 'resource.permission.storage.size' must be between 1024 and 1073741824 bytes, got 1023",
        ),
        (
            {"resource__permission__storage__size": 1073741825},
            "field 'resource.permission.storage.size' must be between 1024 and 1073741824 bytes",
        ),
        (
            {"resource__permission__tool__enabled": "maybe"},
            "field 'resource.permission.tool.enabled' must be true or false",
        ),
        ({"meta": DELETE}, "field 'meta' is required"),
        ({"meta__version": DELETE}, "field 'meta.version' is required"),
        ({"meta__runner": DELETE}, "field 'meta.runner' is required"),
        (
            {"meta__runner__language": "go"},
            "field 'meta.runner.language' must be 'python' (the only runner language of the SDK protocol; another "
            "language needs meta.runner.protocol: line/1), got 'go'",
        ),
        (
            {"meta__runner__protocol": "line/9"},
            "field 'meta.runner.protocol' must be one of line/1 (or absent for the SDK's), got 'line/9'",
        ),
        (
            {"meta__runner__protocol": "line/1", "meta__runner__language": "Node JS"},
            "field 'meta.runner.language' must be a plain lower-case name (node, bash...), got 'Node JS'",
        ),
        ({"meta__runner__entrypoint": DELETE}, "field 'meta.runner.entrypoint' is required"),
        ({"meta__runner__version": DELETE}, "field 'meta.runner.version' is required"),
        ({"meta__arch": ["x86"]}, "field 'meta.arch' must list only amd64 and arm64, got 'x86'"),
        ({"plugins": {}}, "manifest.yaml: field 'plugins' must list at least one of tools, models, endpoints"),
        ({"plugins": DELETE}, "field 'plugins' must list at least one of"),
        ({"plugins__tools": "provider/demo.yaml"}, "field 'plugins.tools' must be a list of file paths"),
        (
            {"plugins__tools": ["../outside.yaml"]},
            "manifest.yaml: field 'plugins.tools' escapes the package folder: '../outside.yaml'",
        ),
        ({"plugins__tools": ["/etc/demo.yaml"]}, "field 'plugins.tools' must be a relative path inside the package"),
        ({"tags": "utilities"}, "field 'tags' must be a list"),
    ],
)
def test_each_field_rule(changes: dict[str, Any], message: str) -> None:
    assert message in manifest_error(**changes)


def test_manifest_is_required() -> None:
    files = tool_plugin()
    del files["manifest.yaml"]
    assert decode_error(files) == "package has no manifest.yaml at its root"


def test_manifest_in_a_subfolder_does_not_count() -> None:
    files = tool_plugin()
    files["demo/manifest.yaml"] = files.pop("manifest.yaml")
    assert decode_error(files) == "package has no manifest.yaml at its root"


def test_manifest_must_be_yaml_mapping() -> None:
    files = tool_plugin()
    files["manifest.yaml"] = b"version: [unclosed\n"
    assert decode_error(files).startswith("manifest.yaml: not valid YAML at line")
    files["manifest.yaml"] = b"- just\n- a list\n"
    assert decode_error(files) == "manifest.yaml: expected a mapping of fields, got list"


def test_yaml_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    files = tool_plugin()
    files["manifest.yaml"] = files["manifest.yaml"] + "\n".join(lines).encode() + b"\n"
    assert decode_error(files) == "manifest.yaml: the YAML expands to too many values or nests too deeply"


def test_missing_icon_asset() -> None:
    message = manifest_error(icon="missing.svg")
    assert message == "manifest.yaml field 'icon' refers to _assets/missing.svg, which is not in the package"


def test_missing_dark_icon_asset() -> None:
    assert "manifest.yaml field 'icon_dark' refers to _assets/dark.svg" in manifest_error(icon_dark="dark.svg")


def test_optional_fields_are_kept() -> None:
    manifest = changed(MANIFEST, privacy="PRIVACY.md", repo="https://github.com/x/y")
    manifest["meta"]["minimum_dify_version"] = "1.0.0"
    declaration = decode_package(zip_files(tool_plugin(manifest))).declaration
    assert declaration["privacy"] == "PRIVACY.md"
    assert declaration["repo"] == "https://github.com/x/y"
    assert declaration["meta"]["minimum_dify_version"] == "1.0.0"


def test_version_with_suffix_is_accepted() -> None:
    files = tool_plugin(changed(MANIFEST, version="1.20.300-beta_1"))
    assert str(decode_package(zip_files(files)).identifier.version) == "1.20.300-beta_1"


def test_unquoted_float_in_a_text_field_keeps_its_text() -> None:
    files = tool_plugin()
    files["manifest.yaml"] = to_yaml(MANIFEST).replace(b"version: '3.12'", b"version: 3.10")
    assert decode_package(zip_files(files)).declaration["meta"]["runner"]["version"] == "3.10"


def test_line_protocol_runner_in_another_language_is_accepted() -> None:
    runner = {"language": "node", "version": "20", "entrypoint": "node main.js", "protocol": "line/1"}
    manifest = changed(MANIFEST, meta__runner=runner)
    declaration = decode_package(zip_files(tool_plugin(manifest))).declaration
    assert declaration["meta"]["runner"] == runner
