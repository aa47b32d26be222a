"""The settings of the daemon a test session runs: a throwaway home, the cached working path."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from plugin_daemon.config import Settings

#: environment variable naming the plugin working path (wins over the ini option)
CACHE_ENV = "PYTEST_PLUGIN_DAEMON_CACHE"
DEFAULT_CACHE = "~/.cache/pytest-plugin-daemon"


def cache_path(option: str | None, ini: str | None) -> Path:
    """The plugin working path: ``--dify-plugin-cache``, else ``$PYTEST_PLUGIN_DAEMON_CACHE``, else the ini
    option ``dify_plugin_cache``, else ``~/.cache/pytest-plugin-daemon``."""
    chosen = option or os.environ.get(CACHE_ENV) or ini or DEFAULT_CACHE
    return Path(chosen).expanduser().resolve()


def parse_setting_lines(lines: Iterable[str]) -> dict[str, str]:
    """``NAME=value`` lines (the ini option ``dify_daemon_settings``) as a dict; bad lines raise ValueError."""
    values: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"dify_daemon_settings: {line!r} is not NAME=value")
        values[name.strip()] = value.strip()
    return values


def daemon_settings(home: Path, working_path: Path, overrides: Mapping[str, Any]) -> Settings:
    """Settings for a daemon in ``home`` (its own SQLite database, a random server key, the local runtime,
    no debugging listener), building plugin environments in ``working_path``.

    Other settings come from the environment as for any daemon (``DIFY_INNER_API_URL``,
    ``PIP_MIRROR_URL``, ``UV_PATH``, proxies, ...); ``overrides`` win over everything.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"unknown plugin-daemon setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {
        "PLUGIN_DAEMON_HOME": home,
        "PLUGIN_WORKING_PATH": working_path,
        "DATABASE_URL": f"sqlite:///{home / 'plugin_daemon.db'}",
        "SERVER_KEY": secrets.token_urlsafe(24),
        "PLATFORM": "local",
        "PLUGIN_REMOTE_INSTALLING_ENABLED": False,
        "FORCE_VERIFYING_SIGNATURE": False,  # the plugin under test is a local, unsigned build
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
