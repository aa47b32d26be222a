"""Hostile uploads cost bounded time and memory, and what they held is given back.

Against a real daemon process (``plugin-daemon serve``), whose resident memory is read from /proc
before and after each attack: a bundle listing one package hundreds of times, a bundle listing too
many, a manifest nested thousands deep, and a zip bomb of YAML.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from plugin_daemon.packages import PackageError, build_package, decode_package

from tests.core.test_management_api import ECHO_TOOL, TENANT, envelope, error_of, upload, zip_files
from tests.core.test_package_contents_api import _bundle, _files, _upload_bundle, _variant
from tests.support.daemon_process import KEY, DaemonProcess

#: What an attack may leave the daemon's resident memory grown by.
MEMORY_SLACK = 50 * 1024 * 1024
MANIFEST = (ECHO_TOOL / "manifest.yaml").read_bytes()


class Daemon:
    """A daemon process and a synchronous client of its API."""

    def __init__(self, process: DaemonProcess) -> None:
        self.process = process
        self.client = httpx.Client(base_url=process.url, headers={"X-Api-Key": KEY}, timeout=60)

    def rss(self) -> int:
        return self.process.rss()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("bounds")
    process = DaemonProcess(home / "home", home / "cwd").start()
    try:
        asyncio.run(process.wait_http())
        running = Daemon(process)
        with running.client:
            yield running
    finally:
        process.stop()


@pytest.fixture(scope="module")
def heavy_package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The echo tool with half a megabyte of incompressible data (each decode costs real work)."""
    return _variant(tmp_path_factory.mktemp("heavy"), "heavy_tool", {"data.txt": os.urandom(256 * 1024).hex()})


def _package_with_manifest(manifest: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, content in {**_files(build_package(ECHO_TOOL)), "manifest.yaml": manifest}.items():
            archive.writestr(name, content)
    return buffer.getvalue()


class Attack:
    """Times one request and checks the daemon's memory after it against before it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def __enter__(self) -> Attack:
        self.rss_before = self.daemon.rss()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.took = time.monotonic() - self.started
        grown = self.daemon.rss() - self.rss_before
        assert grown < MEMORY_SLACK, f"the daemon's memory grew by {grown >> 20} MiB and stayed so"


def test_a_bundle_listing_one_package_hundreds_of_times_decodes_it_once(daemon, heavy_package) -> None:
    listed = [{"type": "package", "value": {"path": "heavy.difypkg"}}] * 256
    bundle = _bundle(listed, {"heavy.difypkg": heavy_package})
    envelope(_upload_bundle(daemon.client, bundle))  # warm: first-time imports and caches are not the attack
    with Attack(daemon) as attack:
        dependencies = envelope(_upload_bundle(daemon.client, bundle))
    # each decode of this package costs tens of milliseconds: 256 of them took 20 s before
    assert attack.took < 8.0, f"took {attack.took:.1f} s"
    assert len(dependencies) == 256
    assert len({item["value"]["unique_identifier"] for item in dependencies}) == 1


def test_a_bundle_listing_more_than_the_cap_is_refused_at_once(daemon, heavy_package) -> None:
    listed = [{"type": "package", "value": {"path": "heavy.difypkg"}}] * 640
    with Attack(daemon) as attack:
        response = _upload_bundle(daemon.client, _bundle(listed, {"heavy.difypkg": heavy_package}))
    error = error_of(response)
    assert error["error_type"] == "PluginDaemonBadRequestError"
    assert "640 dependencies" in error["message"] and "MAX_BUNDLE_DEPENDENCIES" in error["message"]
    assert attack.took < 5.0, f"took {attack.took:.1f} s"


def test_a_manifest_nested_thousands_deep_is_a_bad_request(daemon) -> None:
    nested = MANIFEST + b"\nextra: " + b"[" * 5000 + b"]" * 5000 + b"\n"
    block_nested = MANIFEST + b"\nextra:\n" + b"".join(b" " * depth + b"-\n" for depth in range(1, 800))
    for manifest in (nested, block_nested):
        error = error_of(upload(daemon.client, _package_with_manifest(manifest)))
        assert error["error_type"] == "PluginDaemonBadRequestError", error
        assert "manifest.yaml" in error["message"] and "recursion" not in error["message"]
        assert "nest" in error["message"]


def test_a_zip_bomb_of_yaml_is_refused_before_it_is_parsed(daemon) -> None:
    bomb = _package_with_manifest(MANIFEST + b"\n" + b"#" * (45 * 1024 * 1024) + b"\n")
    assert len(bomb) < 100 * 1024
    envelope(upload(daemon.client, build_package(ECHO_TOOL)))  # warm
    with Attack(daemon) as attack:
        errors = [error_of(upload(daemon.client, bomb)) for _ in range(3)]
    for error in errors:
        assert error["error_type"] == "PluginDaemonBadRequestError"
        assert "MAX_PLUGIN_YAML_SIZE" in error["message"], error
    # the pure-Python loader took 19-31 s of CPU on each
    assert attack.took < 10.0, f"took {attack.took:.1f} s"
    assert (
        daemon.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}).json()["code"] == 0
    )


def test_a_tool_file_named_thousands_of_times_is_not_parsed_thousands_of_times(tmp_path: Path) -> None:
    files = _files(build_package(ECHO_TOOL))
    head, _, _ = files["provider/echo_tool.yaml"].decode().partition("\ntools:")
    files["provider/echo_tool.yaml"] = (head + "\ntools:\n" + "  - tools/echo.yaml\n" * 20_000).encode()
    started = time.monotonic()
    with pytest.raises(PackageError, match="MAX_PLUGIN_YAML_SIZE"):
        decode_package(zip_files(files), max_yaml_size=64 * 1024)
    assert time.monotonic() - started < 5.0
