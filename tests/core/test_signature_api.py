"""Signatures through the daemon, as Dify's defaults expect: the official key verifies the real
Marketplace package, unsigned packages are refused in Dify's envelope while forcing is on, a
third-party key made and used with ``plugin-daemon signature`` is honoured when configured, and
``ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES`` guards the langgenius author. Go's settings keep Go's defaults.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from plugin_daemon.cli import cli
from plugin_daemon.config import Settings
from plugin_daemon.packages import build_package

from tests.core.packages.test_package_signature import MARKETPLACE_IDENTIFIER, MARKETPLACE_PACKAGE
from tests.core.test_management_api import ECHO_TOOL, envelope, error_of, install, upload
from tests.core.test_package_contents_api import _bundle, _upload_bundle
from tests.support.daemon_server import running_daemon
from tests.support.namespaced_daemon import OWN_PREFIXES


def test_go_defaults_for_the_signature_settings() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.FORCE_VERIFYING_SIGNATURE is True
    assert settings.ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES is True
    assert settings.THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED is False
    assert settings.THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS == ""


def test_the_marketplace_package_is_accepted_and_unsigned_ones_refused(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=True)
    with running_daemon(settings) as server:
        decoded = envelope(upload(server.client, MARKETPLACE_PACKAGE.read_bytes()))
        assert decoded["unique_identifier"] == MARKETPLACE_IDENTIFIER
        assert decoded["verification"] == {"authorized_category": "langgenius"}
        assert decoded["manifest"]["verified"] is True

        refused = error_of(upload(server.client, build_package(ECHO_TOOL)))
        assert refused["error_type"] == "PluginDaemonBadRequestError"
        assert refused["message"] == (
            "the package signature is required but could not be verified (keys tried: Dify's official key):"
            " the package is not signed (FORCE_VERIFYING_SIGNATURE is on: to install a package of your own,"
            " sign it with a key listed in THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS, or turn forcing off)"
        )


def test_unsigned_packages_install_with_forcing_off(make_settings) -> None:  # type: ignore[no-untyped-def]
    with running_daemon(make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=False)) as server:
        decoded = envelope(upload(server.client, build_package(ECHO_TOOL)))
        assert decoded["verification"] is None and decoded["manifest"]["verified"] is False
        assert install(server.client, decoded["unique_identifier"])["status"] == "success"
        # Dify asks for a signature on this upload: forcing off does not overrule it
        asked = server.client.post(
            "/plugin/tenant-1/management/install/upload/package",
            files={"dify_pkg": ("dify_pkg", build_package(ECHO_TOOL), "application/octet-stream")},
            data={"verify_signature": "true"},
        )
        assert error_of(asked)["message"].endswith("the package is not signed")


def test_cli_round_trip_then_install_with_the_third_party_key(  # type: ignore[no-untyped-def]
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    generated = runner.invoke(cli, ["signature", "generate", "-f", "ours"])
    assert generated.exit_code == 0, generated.output
    assert (tmp_path / "ours.private.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ours.public.pem").read_bytes().startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    assert runner.invoke(cli, ["signature", "generate", "-f", "ours"]).exit_code != 0  # never overwrites a key

    (tmp_path / "echo.difypkg").write_bytes(build_package(ECHO_TOOL))
    signed = runner.invoke(cli, ["signature", "sign", "echo.difypkg", "-p", "ours.private.pem", "-c", "community"])
    assert signed.exit_code == 0, signed.output
    assert (tmp_path / "echo.signed.difypkg").is_file()

    verified = runner.invoke(cli, ["signature", "verify", "echo.signed.difypkg", "-p", "ours.public.pem"])
    assert verified.exit_code == 0, verified.output
    assert "verified with third-party key 'ours.public.pem'; authorized category: community" in verified.output
    official = runner.invoke(cli, ["signature", "verify", "echo.signed.difypkg"])  # Dify's key by default
    assert official.exit_code == 1
    assert "keys tried: Dify's official key" in official.output
    marketplace = runner.invoke(cli, ["signature", "verify", str(MARKETPLACE_PACKAGE)])
    assert marketplace.exit_code == 0 and "authorized category: langgenius" in marketplace.output
    bad = runner.invoke(cli, ["signature", "sign", "echo.difypkg", "-p", "ours.private.pem", "-c", "official"])
    assert bad.exit_code == 1 and "invalid authorized category 'official'" in bad.output

    package = (tmp_path / "echo.signed.difypkg").read_bytes()
    without_key = make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=True)
    with running_daemon(without_key) as server:
        assert "the signature does not match" in error_of(upload(server.client, package))["message"]
    with_key = make_settings(
        PLATFORM="memory",
        FORCE_VERIFYING_SIGNATURE=True,
        THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED=True,
        THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS=f" {tmp_path / 'ours.public.pem'} ",
    )
    with running_daemon(with_key) as server:
        decoded = envelope(upload(server.client, package))
        assert decoded["verification"] == {"authorized_category": "community"}
        assert install(server.client, decoded["unique_identifier"])["status"] == "success"
        # the official key is still tried first
        assert envelope(upload(server.client, MARKETPLACE_PACKAGE.read_bytes()))["manifest"]["verified"] is True


def test_swapped_names_are_refused_through_the_api(make_settings) -> None:  # type: ignore[no-untyped-def]
    data = MARKETPLACE_PACKAGE.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
        comment = archive.comment
    names = [name for name, _ in entries]
    first, second = names.index("provider/agent.py"), names.index("strategies/ReAct.py")
    entries[first], entries[second] = (names[second], entries[first][1]), (names[first], entries[second][1])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
        archive.comment = comment
    with running_daemon(make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=True)) as server:
        message = error_of(upload(server.client, buffer.getvalue()))["message"]
    assert "the signature matches Dify's official key, but its entries are not in the order" in message


def langgenius_package() -> bytes:
    data = build_package(ECHO_TOOL)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            if name == "manifest.yaml":
                manifest: dict[str, Any] = yaml.safe_load(content)
                manifest["author"] = "langgenius"
                content = yaml.safe_dump(manifest).encode()
            archive.writestr(name, content)
    return buffer.getvalue()


def test_an_unsigned_langgenius_package_is_refused_unless_enforcing_is_off(make_settings) -> None:  # type: ignore[no-untyped-def]
    package = langgenius_package()
    with running_daemon(make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=False)) as server:
        assert error_of(upload(server.client, package))["message"] == (
            "plugin installation blocked: the plugin's author is langgenius, but no key vouches for the langgenius"
            " category (set ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES=false to allow it, not recommended)"
        )
    relaxed = make_settings(
        PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=False, ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES=False
    )
    with running_daemon(relaxed) as server:
        assert envelope(upload(server.client, package))["manifest"]["author"] == "langgenius"


def test_bundles_follow_the_same_rules(make_settings) -> None:  # type: ignore[no-untyped-def]
    """A bundle's packages pass the same checks: signatures when forced, and the langgenius author."""
    dependencies = [{"type": "package", "value": {"path": "agent.difypkg"}}]
    marketplace = _bundle(dependencies, {"agent.difypkg": MARKETPLACE_PACKAGE.read_bytes()})
    unsigned = _bundle(dependencies, {"agent.difypkg": build_package(ECHO_TOOL)})
    claiming = _bundle(dependencies, {"agent.difypkg": langgenius_package()})
    with running_daemon(make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=True)) as server:
        listed = envelope(_upload_bundle(server.client, marketplace))
        assert listed[0]["value"]["unique_identifier"] == MARKETPLACE_IDENTIFIER
        message = error_of(_upload_bundle(server.client, unsigned))["message"]
        assert message.startswith("bundle package 'agent.difypkg': the package signature is required")
    with running_daemon(make_settings(PLATFORM="memory", FORCE_VERIFYING_SIGNATURE=False)) as server:
        message = error_of(_upload_bundle(server.client, claiming))["message"]
        assert message.startswith("bundle package 'agent.difypkg': plugin installation blocked")


def test_a_third_party_key_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(OWN_PREFIXES)}
    environ.update(
        SERVER_KEY="a-key-of-our-own-0123456789",
        THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED="true",
        THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS="keys/missing.pem",
        PLUGIN_REMOTE_INSTALLING_ENABLED="false",
    )
    result = subprocess.run(
        [sys.executable, "-m", "plugin_daemon.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Error: THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS: cannot read keys/missing.pem" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
