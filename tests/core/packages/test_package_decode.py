"""decode_package on good packages: the declaration, checksum, identifier, assets and files."""

from __future__ import annotations

import pytest
from plugin_daemon.packages import (
    DecodedPackage,
    PackageError,
    PluginIdentifier,
    decode_package,
    package_checksum,
    plugin_category,
)

from tests.core.packages.packages_helpers import (
    ICON,
    MANIFEST,
    changed,
    checksum_by_the_spec,
    media_id_by_the_spec,
    to_yaml,
    tool_plugin,
    zip_files,
)

ICON_ID = media_id_by_the_spec("icon.svg", ICON)

EXPECTED_DECLARATION = {
    "version": "0.0.1",
    "type": "plugin",
    "author": "tester",
    "name": "demo",
    "label": {"en_US": "Demo", "zh_Hans": "演示"},
    "description": {"en_US": "A demo plugin."},
    "icon": ICON_ID,
    "icon_dark": "",
    "resource": {
        "memory": 268435456,
        "permission": {"tool": {"enabled": True}, "storage": {"enabled": True, "size": 1048576}},
    },
    "plugins": {
        "tools": ["provider/demo.yaml"],
        "models": [],
        "endpoints": [],
        "agent_strategies": [],
        "datasources": [],
        "triggers": [],
    },
    "meta": {
        "version": "0.0.1",
        "arch": ["amd64", "arm64"],
        "runner": {"language": "python", "version": "3.12", "entrypoint": "main"},
        "minimum_dify_version": None,
    },
    "tags": ["utilities"],
    "created_at": "2024-07-12T08:03:44.658609Z",
    "privacy": None,
    "repo": None,
    "verified": False,
    "tool": {
        "identity": {
            "author": "tester",
            "name": "demo",
            "label": {"en_US": "Demo"},
            "icon": ICON_ID,
            "tags": ["utilities"],  # from the manifest, as the Go daemon fills it
            "description": {"en_US": "A demo plugin."},  # likewise
        },
        "credentials_schema": [
            {"type": "secret-input", "required": True, "label": {"en_US": "API key"}, "name": "api_key"}
        ],
        "tools": [
            {
                "identity": {"name": "echo", "author": "tester", "label": {"en_US": "Echo"}},
                "description": {"human": {"en_US": "Echoes its input."}, "llm": "Echo the text back."},
                "parameters": [
                    {
                        "name": "text",
                        "type": "string",
                        "required": True,
                        "label": {"en_US": "Text"},
                        "human_description": {"en_US": "Text to echo"},
                        "form": "llm",
                    }
                ],
                "extra": {"python": {"source": "tools/echo.py"}},
                "has_runtime_parameters": False,
            }
        ],
        "extra": {"python": {"source": "provider/demo.py"}},
        "oauth_schema": None,
    },
    "model": None,
    "endpoint": None,
    "agent_strategy": None,
    "datasource": None,
    "trigger": None,
    "category": "tool",
}


def test_a_tool_plugin_decodes_to_the_expected_declaration() -> None:
    decoded = decode_package(zip_files(tool_plugin()))

    assert isinstance(decoded, DecodedPackage)
    assert decoded.declaration == EXPECTED_DECLARATION
    assert decoded.verification is None


def test_checksum_and_identifier_follow_the_spec() -> None:
    data = zip_files(tool_plugin())
    decoded = decode_package(data)

    expected = checksum_by_the_spec(data)
    assert decoded.checksum == expected
    assert package_checksum(decoded.files) == expected
    assert decoded.identifier == PluginIdentifier("tester", "demo", "0.0.1", expected)
    assert str(decoded.identifier) == f"tester/demo:0.0.1@{expected}"
    assert decoded.identifier.plugin_id == "tester/demo"


def test_checksum_ignores_zip_order_but_not_content() -> None:
    files = tool_plugin()
    forwards = decode_package(zip_files(files)).checksum
    backwards = decode_package(zip_files(list(reversed(files.items())))).checksum
    edited = decode_package(zip_files({**files, "main.py": b"print('changed')\n"})).checksum
    assert forwards == backwards
    assert edited != forwards


def test_files_keep_zip_order_and_assets_are_keyed_by_media_id() -> None:
    files = tool_plugin()
    files["_assets/extra/banner.png"] = b"\x89PNG not really"
    decoded = decode_package(zip_files(list(reversed(files.items()))))

    assert list(decoded.files) == list(reversed(files))
    assert decoded.files["main.py"] == files["main.py"]
    assert decoded.assets == {
        ICON_ID: ICON,
        media_id_by_the_spec("extra/banner.png", b"\x89PNG not really"): b"\x89PNG not really",
    }


def test_declaration_is_plain_json() -> None:
    import json

    decoded = decode_package(zip_files(tool_plugin()))
    assert json.loads(json.dumps(decoded.declaration)) == decoded.declaration


def test_directory_entries_are_not_files() -> None:
    files = list(tool_plugin().items())
    decoded = decode_package(zip_files([("tools/", b""), *files]))
    assert "tools/" not in decoded.files
    assert decoded.checksum == package_checksum(dict(files))


def test_yaml_is_read_as_yaml_1_2_like_the_go_daemon() -> None:
    """Unquoted 3.10 stays "3.10" in a text field; yes/on are words, not booleans."""
    manifest = changed(MANIFEST, meta__runner__version=3.10)
    files = tool_plugin(manifest)
    text = files["manifest.yaml"].replace(b"version: 3.1\n", b"version: 3.10\n")
    assert b"version: 3.10\n" in text
    files["manifest.yaml"] = text
    files["tools/echo.yaml"] = files["tools/echo.yaml"] + b"answer: yes\nwhen: 2024-01-01\n"
    decoded = decode_package(zip_files(files))

    assert decoded.declaration["meta"]["runner"]["version"] == "3.10"
    tool = decoded.declaration["tool"]["tools"][0]
    assert tool["answer"] == "yes"
    assert tool["when"] == "2024-01-01"


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("2024-12-06T10:38:15.244939123+08:00", "2024-12-06T10:38:15.244939+08:00"),
        ("2024-01-01 08:30:00", "2024-01-01T08:30:00Z"),
    ],
)
def test_created_at_is_formatted_like_go(created_at: str, expected: str) -> None:
    files = tool_plugin()
    files["manifest.yaml"] = to_yaml(changed(MANIFEST, created_at="X")).replace(
        b"created_at: X", b"created_at: " + created_at.encode()
    )
    assert decode_package(zip_files(files)).declaration["created_at"] == expected


def test_defaults_are_filled() -> None:
    manifest = changed(MANIFEST, meta__arch=None, tags=None)
    manifest["meta"].pop("arch")
    manifest["resource"]["permission"]["storage"] = {"enabled": True}
    decoded = decode_package(zip_files(tool_plugin(manifest)))

    assert decoded.declaration["meta"]["arch"] == ["amd64", "arm64"]
    assert decoded.declaration["tags"] == []
    assert decoded.declaration["resource"]["permission"]["storage"]["size"] == 1048576


@pytest.mark.parametrize(
    ("declaration", "category"),
    [
        ({"tool": {"identity": {}}}, "tool"),
        ({"plugins": {"tools": ["a.yaml"]}}, "tool"),
        ({"model": {"provider": "x"}}, "model"),
        ({"plugins": {"endpoints": ["e.yaml"]}, "endpoint": {"endpoints": []}}, "extension"),
        ({"agent_strategy": {"identity": {}}}, "agent-strategy"),
        ({"datasource": {"identity": {}}}, "datasource"),
        ({"plugins": {"triggers": ["t.yaml"]}}, "trigger"),
        ({}, "extension"),
    ],
)
def test_plugin_category(declaration: dict, category: str) -> None:
    assert plugin_category(declaration) == category


def test_identifier_parse_and_print() -> None:
    checksum = "a" * 64
    identifier = PluginIdentifier.parse(f"langgenius/openai:1.2.3-beta@{checksum}")
    assert (identifier.author, identifier.name, identifier.version) == ("langgenius", "openai", "1.2.3-beta")
    assert identifier.plugin_id == "langgenius/openai"
    assert str(identifier) == f"langgenius/openai:1.2.3-beta@{checksum}"

    anonymous = PluginIdentifier.parse(f"openai:1.2@{'b' * 32}")
    assert anonymous.author == ""
    assert anonymous.plugin_id == "openai"
    assert str(anonymous) == f"openai:1.2@{'b' * 32}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a/b:1.0.0",
        f"A/b:1.0.0@{'a' * 64}",
        f"a/b:1@{'a' * 64}",
        f"a/b:1.0.0@{'g' * 64}",
        f"a/b/c:1.0.0@{'a' * 64}",
    ],
)
def test_identifier_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(PackageError, match="is not of the form author/name:version@checksum"):
        PluginIdentifier.parse(text)


def test_declaration_from_parts_matches_a_decoded_package() -> None:
    """The debug runtime builds declarations from a manifest and expanded providers; same shape."""
    from plugin_daemon.packages import declaration_from_parts

    decoded = decode_package(zip_files(tool_plugin())).declaration
    tool = {**decoded["tool"], "identity": {**decoded["tool"]["identity"], "icon": "icon.svg"}}
    built = declaration_from_parts(MANIFEST, {"tool": tool})
    assert built == {**decoded, "icon": "icon.svg", "tool": tool}

    with pytest.raises(PackageError, match="tool declaration: field 'identity.name' is required"):
        declaration_from_parts(MANIFEST, {"tool": {"identity": {}}})
    with pytest.raises(PackageError, match="manifest.yaml: field 'version' must look like 1.2.3"):
        declaration_from_parts(changed(MANIFEST, version="x"), {"tool": tool})
