"""What the API serves from inside packages: readmes, raw assets, and bundles of packages.

Over real HTTP against the daemon (in-memory runtime); the packages are the echo tool's, with
files added or changed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from plugin_daemon.packages import build_package

from tests.core.test_management_api import ECHO_TOOL, TENANT, envelope, error_of, install, upload, zip_files
from tests.support.daemon_server import running_daemon

M = f"/plugin/{TENANT}/management"
ICON = (ECHO_TOOL / "_assets" / "icon.svg").read_bytes()


def _files(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def _variant(tmp_path: Path, name: str, extra: dict[str, str] | None = None) -> bytes:
    """The echo tool renamed ``name``, with ``extra`` files (path -> text) added."""
    folder = tmp_path / name
    folder.mkdir()
    for source in ECHO_TOOL.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            target = folder / source.relative_to(ECHO_TOOL)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("name: echo_tool", f"name: {name}", 1))
    for path, text in (extra or {}).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return build_package(folder)


def _readme(client: httpx.Client, identifier: str, language: str) -> httpx.Response:
    return client.get(f"{M}/fetch/readme", params={"plugin_unique_identifier": identifier, "language": language})


def _asset(client: httpx.Client, identifier: str, path: str) -> httpx.Response:
    return client.get(
        f"/plugin/{TENANT}/extract-asset/", params={"plugin_unique_identifier": identifier, "file_path": path}
    )


def test_readmes_by_language_with_fallbacks(make_settings, tmp_path) -> None:
    with_readmes = _variant(
        tmp_path,
        "readable",
        {
            "README.md": "# Readable\n",
            "readme/README_zh_Hans.md": "# 可读\n",
            "readme/README_ja_JP.md": "# 読める\n",
            "readme/notes.md": "not a readme",
        },
    )
    only_japanese = _variant(tmp_path, "japanese", {"readme/README_ja_JP.md": "# 日本語\n"})
    without = _variant(tmp_path, "silent")
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        client = server.client
        readable, japanese, silent = (
            envelope(upload(client, package))["unique_identifier"] for package in (with_readmes, only_japanese, without)
        )
        assert envelope(_readme(client, readable, "zh_Hans")) == {"content": "# 可读\n", "language": "zh_Hans"}
        assert envelope(_readme(client, readable, "ja_JP")) == {"content": "# 読める\n", "language": "ja_JP"}
        assert envelope(_readme(client, readable, "pt_BR")) == {"content": "# Readable\n", "language": "en_US"}
        assert envelope(_readme(client, readable, "")) == {"content": "# Readable\n", "language": "en_US"}
        assert envelope(_readme(client, japanese, "en_US")) == {"content": "# 日本語\n", "language": "ja_JP"}

        # no readme: Go's NotFound answer (HTTP 200, code -404)
        none = _readme(client, silent, "ja_JP")
        assert none.status_code == 200 and none.json()["code"] == -404
        assert error_of(none) == {
            "message": "no readme content available for this plugin",
            "error_type": "PluginDaemonNotFoundError",
            "args": None,
        }
        unknown = _readme(client, "tester/ghost:0.0.1@" + "a" * 64, "en_US")
        assert unknown.status_code == 200  # Dify reads the error type only from a 200 answer
        assert error_of(unknown)["error_type"] == "PluginDaemonNotFoundError"
        assert "not known" in error_of(unknown)["message"]
        assert error_of(_readme(client, "not an identifier", "en_US"))["error_type"] == "PluginUniqueIdentifierError"


def test_extract_asset_serves_only_the_packages_assets(make_settings) -> None:
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        client = server.client
        identifier = envelope(upload(client, build_package(ECHO_TOOL)))["unique_identifier"]
        icon = _asset(client, identifier, "icon.svg")
        assert icon.status_code == 200
        assert icon.headers["content-type"] == "application/octet-stream"
        assert icon.content == ICON
        for hostile in ("missing.svg", "../manifest.yaml", "../../../../etc/passwd", "/etc/passwd", "main.py"):
            refused = _asset(client, identifier, hostile)
            assert refused.status_code == 404, hostile
            assert "no asset" in error_of(refused)["message"]
        assert "plugin_unique_identifier" in error_of(client.get(f"/plugin/{TENANT}/extract-asset/"))["message"]
        no_path = client.get(f"/plugin/{TENANT}/extract-asset/", params={"plugin_unique_identifier": identifier})
        assert "file_path" in error_of(no_path)["message"]
        unknown = _asset(client, "tester/ghost:0.0.1@" + "a" * 64, "icon.svg")
        assert unknown.status_code == 404


# --- bundles ------------------------------------------------------------------------------------


def _bundle(dependencies: list[dict[str, Any]], packages: dict[str, bytes], **manifest: Any) -> bytes:
    document = {
        "type": "bundle",
        "name": "starter",
        "author": "tester",
        "version": "0.0.1",
        "icon": "icon.svg",
        "labels": {"en_US": "Starter"},
        "description": {"en_US": "Plugins to start with."},
        "tags": [],
        "dependencies": dependencies,
        **manifest,
    }
    files = {"manifest.yaml": yaml.safe_dump(document).encode(), "_assets/icon.svg": ICON}
    files.update({f"_assets/{path}": data for path, data in packages.items()})
    return zip_files(files)


def _upload_bundle(client: httpx.Client, bundle: bytes, verify: bool = False) -> httpx.Response:
    return client.post(
        f"{M}/install/upload/bundle",
        files={"dify_bundle": ("dify_bundle", bundle, "application/octet-stream")},
        data={"verify_signature": "true" if verify else "false"},
    )


def _known(client: httpx.Client, identifier: str) -> bool:
    return bool(envelope(client.get(f"{M}/fetch/identifier", params={"plugin_unique_identifier": identifier})))


@pytest.fixture(scope="module")
def two_packages(tmp_path_factory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("bundled")
    return _variant(folder, "first_tool"), _variant(folder, "second_tool")


def test_bundle_upload_keeps_its_packages_and_lists_every_dependency(make_settings, two_packages) -> None:
    first, second = two_packages
    bundle = _bundle(
        [
            {"type": "github", "value": {"repo_pattern": "someone/tools:1.2.3/tools.difypkg"}},
            {"type": "package", "value": {"path": "first.difypkg"}},
            {"type": "marketplace", "value": {"marketplace_pattern": "langgenius/openai:^0.0.7"}},
            {"type": "package", "value": {"path": "nested/second.difypkg"}},
        ],
        {"first.difypkg": first, "nested/second.difypkg": second},
    )
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        client = server.client
        dependencies = envelope(_upload_bundle(client, bundle))
        assert [d["type"] for d in dependencies] == ["github", "package", "marketplace", "package"]
        assert dependencies[0]["value"] == {
            "repo_address": "https://github.com/someone/tools",
            "repo": "someone/tools",
            "release": "1.2.3",
            "packages": "tools.difypkg",
        }
        assert dependencies[2]["value"] == {"organization": "langgenius", "plugin": "openai", "version": "^0.0.7"}
        first_value, second_value = dependencies[1]["value"], dependencies[3]["value"]
        assert first_value["unique_identifier"].startswith("tester/first_tool:0.0.1@")
        assert first_value["manifest"]["name"] == "first_tool"
        assert first_value["manifest"]["icon"] != "icon.svg"  # rewritten to a media id, as on upload
        assert second_value["unique_identifier"].startswith("tester/second_tool:0.0.1@")

        # the packages are kept as an upload keeps them: known, and installable
        assert _known(client, first_value["unique_identifier"]) and _known(client, second_value["unique_identifier"])
        assert install(client, second_value["unique_identifier"])["status"] == "success"
        # the same bundle again is no error (uploads are idempotent)
        assert envelope(_upload_bundle(client, bundle)) == dependencies


def test_a_bad_bundle_is_refused_whole_and_keeps_nothing(make_settings, two_packages) -> None:
    first, _ = two_packages
    settings = make_settings(PLATFORM="memory", MAX_BUNDLE_PACKAGE_SIZE=len(first) * 8)
    package_dependency = {"type": "package", "value": {"path": "first.difypkg"}}
    broken = _files(first)
    broken["manifest.yaml"] = broken["manifest.yaml"].replace(b"version: 0.0.1\n", b"version: banana\n", 1)
    with running_daemon(settings) as server:
        client = server.client

        def refused(bundle: bytes, *words: str, verify: bool = False) -> None:
            error = error_of(_upload_bundle(client, bundle, verify))
            assert error["error_type"] == "PluginDaemonBadRequestError", error
            assert all(word in error["message"] for word in words), error["message"]

        # one bad package sinks the bundle, and the good package before it is not kept either
        refused(
            _bundle(
                [package_dependency, {"type": "package", "value": {"path": "broken.difypkg"}}],
                {"first.difypkg": first, "broken.difypkg": zip_files(broken)},
            ),
            "broken.difypkg",
            "version",
        )
        refused(_bundle([{"type": "package", "value": {"path": "absent.difypkg"}}], {}), "absent.difypkg")
        refused(_bundle([package_dependency], {"first.difypkg": first}, type="plugin"), "type")
        refused(_bundle([{"type": "github", "value": {"repo_pattern": "nope"}}], {}), "repo_pattern")
        refused(_bundle([{"type": "marketplace", "value": {"marketplace_pattern": "a/b"}}], {}), "marketplace")
        refused(_bundle([{"type": "ftp", "value": {"path": "x"}}], {}), "ftp")
        refused(_bundle([package_dependency], {"first.difypkg": first}), "signature", verify=True)
        refused(zip_files({"manifest.yaml": b"type: bundle\ndependencies: []\n", "../escape": b"x"}), "escape")
        refused(zip_files({"README.md": b"no manifest"}), "manifest.yaml")
        refused(b"not a zip at all", "zip")
        refused(b"0" * (len(first) * 8 + 1), "MAX_BUNDLE_PACKAGE_SIZE")
        no_file = client.post(f"{M}/install/upload/bundle", data={"verify_signature": "false"})
        assert "dify_bundle" in error_of(no_file)["message"]

        assert list(settings.package_path.iterdir()) == []
        assert envelope(client.get(f"{M}/list", params={"page": 1, "page_size": 10}))["total"] == 0
