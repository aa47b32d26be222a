"""Go's settings read as Go reads them: every name honoured or listed as unsupported, the storage
root and the paths under it, minutes for PLUGIN_INSTALL_TIMEOUT, one-line errors, start warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_daemon.config import Settings, SettingsError, load_settings
from plugin_daemon.go_settings import GO_SETTING_NAMES, UNSUPPORTED, warnings_for

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_go_setting_is_honoured_or_listed_as_unsupported() -> None:
    assert len(GO_SETTING_NAMES) == len(set(GO_SETTING_NAMES)) == 166
    for name in GO_SETTING_NAMES:
        honoured, unsupported = name in Settings.model_fields, name in UNSUPPORTED
        assert honoured != unsupported, f"{name}: honoured={honoured}, listed as unsupported={unsupported}"
    assert set(UNSUPPORTED) <= set(GO_SETTING_NAMES)


UNSUPPORTED_SECTION = README[README.index("### Go settings this daemon does not read") :].split("\n## ")[0]


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_every_unsupported_go_setting_is_in_the_readme_with_its_reason(name: str) -> None:
    assert re.search(rf"`{name}`", UNSUPPORTED_SECTION), f"README's unsupported Go settings lack {name}"


def test_the_readme_lists_no_honoured_setting_as_unsupported() -> None:
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", UNSUPPORTED_SECTION))
    assert listed <= set(UNSUPPORTED), sorted(listed - set(UNSUPPORTED))


def test_the_storage_root_holds_go_s_paths(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    settings = load_settings(_env_file=None, PLUGIN_STORAGE_TYPE="local", PLUGIN_STORAGE_LOCAL_ROOT=root)
    assert settings.home == root
    assert (settings.working_path, settings.installed_path, settings.package_path) == (
        root / "cwd",
        root / "plugin",
        root / "plugin_packages",
    )
    assert (settings.media_path, settings.persistence_path) == (root / "assets", root / "persistence")
    assert settings.database_url == f"sqlite:///{root / 'plugin_daemon.db'}"

    # Dify's compose values; an absolute storage key is a key inside the root, as in Go
    dify = load_settings(
        _env_file=None,
        PLUGIN_STORAGE_LOCAL_ROOT=root,
        PLUGIN_WORKING_PATH=root / "cwd",
        PLUGIN_INSTALLED_PATH="plugin",
        PLUGIN_PACKAGE_CACHE_PATH="/plugin_packages",
        PLUGIN_MEDIA_CACHE_PATH="assets",
    )
    assert dify.working_path == root / "cwd"
    assert dify.package_path == root / "plugin_packages"
    # the working path is a folder of the machine when absolute, under the root when relative
    assert load_settings(_env_file=None, PLUGIN_WORKING_PATH=tmp_path / "w").working_path == tmp_path / "w"
    assert load_settings(_env_file=None, PLUGIN_STORAGE_LOCAL_ROOT=root, PLUGIN_WORKING_PATH="w").working_path == (
        root / "w"
    )


def test_storage_keys_cannot_leave_the_root(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PLUGIN_MEDIA_CACHE_PATH must stay inside the storage root"):
        load_settings(_env_file=None, PLUGIN_STORAGE_LOCAL_ROOT=tmp_path, PLUGIN_MEDIA_CACHE_PATH="../elsewhere")


def test_install_timeout_is_in_minutes_as_in_go() -> None:
    assert load_settings(_env_file=None).install_timeout_seconds == 15 * 60
    assert load_settings(_env_file=None, PLUGIN_INSTALL_TIMEOUT="2").install_timeout_seconds == 120


def test_go_s_defaults_and_legacy_names() -> None:
    settings = load_settings(_env_file=None)
    assert settings.SERVER_HOST == "0.0.0.0"
    assert settings.PROMETHEUS_ENABLED is True
    assert load_settings(_env_file=None, LOG_LEVEL="warn").LOG_LEVEL == "WARNING"
    # Go prefers the legacy PLUGIN_STDIO_MAX_BUFFER_SIZE when it is set to something else than 5 MiB
    legacy = load_settings(_env_file=None, PLUGIN_STDIO_MAX_BUFFER_SIZE=1024 * 1024)
    assert legacy.PLUGIN_RUNTIME_MAX_BUFFER_SIZE == 1024 * 1024
    assert load_settings(_env_file=None, PLUGIN_STDIO_MAX_BUFFER_SIZE=5242880).PLUGIN_RUNTIME_MAX_BUFFER_SIZE == (
        5 * 1024 * 1024
    )


def test_proxies_fall_back_to_the_lowercase_names_as_in_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    monkeypatch.setenv("NO_PROXY", "api")
    settings = load_settings(_env_file=None)
    assert (settings.HTTPS_PROXY, settings.NO_PROXY, settings.HTTP_PROXY) == ("http://proxy.internal:3128", "api", "")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SERVER_PORT", "five", "invalid setting SERVER_PORT: Input should be a valid integer"),
        ("PLUGIN_STORAGE_TYPE", "s3", "invalid setting PLUGIN_STORAGE_TYPE: 's3' is not supported"),
        ("LOG_OUTPUT_FORMAT", "xml", "invalid setting LOG_OUTPUT_FORMAT"),
    ],
)
def test_an_invalid_setting_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("SERVER_", "PLUGIN_", "LOG_"))}
    result = subprocess.run(
        [sys.executable, "-m", "plugin_daemon.cli", "serve"],
        cwd=tmp_path,
        env={**environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_set_unsupported_settings_give_one_warning_naming_them() -> None:
    dify_compose = {
        "REDIS_HOST": "redis",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": "secret",
        "S3_USE_AWS": "false",  # object storage: Go ignores it with local storage too
        "PPROF_ENABLED": "false",
        "SENTRY_ENABLED": "false",
        "PLUGIN_STDIO_BUFFER_SIZE": "1024",
    }
    assert warnings_for(dify_compose) == [
        "REDIS_HOST, REDIS_PASSWORD are set but not supported: Redis: this daemon runs as one node and keeps no "
        "state in Redis (Go needs it for its cluster)"
    ]
    (warning,) = warnings_for({"ENABLE_OTEL": "true"})
    assert warning.startswith("ENABLE_OTEL is set but not supported: OpenTelemetry")
    assert warnings_for({}) == []
