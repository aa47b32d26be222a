"""The environments given to children: allow-lists, never the daemon's own environment.

The daemon's environment holds its secrets (``SERVER_KEY``, ``DB_*``, ``DIFY_INNER_API_KEY``,
storage credentials); a plugin gets only what a Python program needs to run, and uv only what
it needs to resolve and download packages (its own index configuration included).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from plugin_daemon.config import Settings

#: Copied to the plugin when set in the daemon's environment.
PLUGIN_ENV_NAMES = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TMP",
    "TEMP",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
#: Copied to uv as well: user configuration (``~/.config/uv/uv.toml``, pip.conf) and credentials files.
UV_ENV_NAMES = (*PLUGIN_ENV_NAMES, "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "NETRC", "CURL_CA_BUNDLE")
#: ``UV_*`` variables that would point uv somewhere else than the plugin's own venv and cache.
UV_ENV_DENIED = frozenset(
    {
        "UV_CACHE_DIR",
        "UV_PYTHON",
        "UV_PYTHON_DOWNLOADS",
        "UV_PYTHON_PREFERENCE",
        "UV_PYTHON_INSTALL_DIR",
        "UV_PROJECT",
        "UV_PROJECT_ENVIRONMENT",
        "UV_WORKING_DIRECTORY",
        "UV_SYSTEM_PYTHON",
        "UV_NO_SYNC",
        "UV_LOCKED",
        "UV_FROZEN",
        "UV_DEV",
        "UV_NO_DEV",
        "UV_TOOL_DIR",
        "UV_TOOL_BIN_DIR",
    }
)


def _proxies(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        value = getattr(settings, name)
        if value:
            env[name] = value
            env[name.lower()] = value
    return env


def _copy(names: tuple[str, ...], source: Mapping[str, str]) -> dict[str, str]:
    env = {name: source[name] for name in names if name in source}
    env.update((name, value) for name, value in source.items() if name.startswith("LC_"))
    env.setdefault("PATH", os.defpath)
    return env


def plugin_environment(
    settings: Settings,
    venv: Path,
    extra: Mapping[str, str] | None = None,
    source: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The whole environment of a plugin process (an allow-list plus ``INSTALL_METHOD=local``)."""
    env = _copy(PLUGIN_ENV_NAMES, source)
    env.update(_proxies(settings))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    if extra:
        env.update(extra)
    env["INSTALL_METHOD"] = "local"
    return env


def uv_environment(
    settings: Settings, venv: Path, cache_dir: Path, source: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment of the uv commands that build a plugin's venv."""
    env = _copy(UV_ENV_NAMES, source)
    env.update(
        (name, value)
        for name, value in source.items()
        if (name.startswith("UV_") and name not in UV_ENV_DENIED) or name.startswith("PIP_")
    )
    env.update(_proxies(settings))
    env["VIRTUAL_ENV"] = str(venv)
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_CACHE_DIR"] = str(cache_dir)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    return env
