"""The environments given to children: allow-lists, never the daemon's own environment.

The daemon's environment holds its secrets (``SERVER_KEY``, ``DB_*``, ``DIFY_INNER_API_KEY``,
storage credentials); a plugin gets only what a Python program needs to run, and uv only what
it needs to resolve and download packages (its own index configuration included).

An operator adds to a plugin's allow-list with ``PLUGIN_EXTRA_ENV`` (:func:`extra_plugin_environment`):
names copied from the daemon's environment, or ``NAME=value`` pairs. A name that looks like a
credential is never copied, and the daemon's own secret settings are refused in both forms.
"""

from __future__ import annotations

import os
import re
import shlex
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
    # the SDK counts tokens with tiktoken; encodings preloaded here spare a download (as the Go image)
    "TIKTOKEN_CACHE_DIR",
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
    *,
    debugger: bool = False,
) -> dict[str, str]:
    """The whole environment of a plugin process (an allow-list plus ``INSTALL_METHOD=local``).

    Without a debugger attached, ``breakpoint()`` is a no-op (``PYTHONBREAKPOINT=0``): pdb would
    print its prompt into the protocol stream (stdout) and wait forever on the request pipe.
    """
    env = _copy(PLUGIN_ENV_NAMES, source)
    env.update(_proxies(settings))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    if extra:
        env.update(extra)
    env["INSTALL_METHOD"] = "local"
    if not debugger:
        env["PYTHONBREAKPOINT"] = "0"
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
    env["UV_PYTHON_DOWNLOADS"] = settings.UV_PYTHON_DOWNLOADS
    env["UV_NO_PROGRESS"] = "1"
    return env


#: Name parts (between underscores) that mark a variable as a credential.
_SECRET_PARTS = frozenset(
    {
        "KEY",
        "KEYS",
        "APIKEY",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "TOKEN",
        "CREDENTIAL",
        "CREDENTIALS",
        "DSN",
    }
)
#: Set by the runtime itself; an operator's value would break the plugin's venv.
_RESERVED = frozenset({"PATH", "VIRTUAL_ENV", "INSTALL_METHOD", "PYTHONHOME"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def looks_secret(name: str) -> bool:
    """True for a name that holds a credential (``DB_PASSWORD``, ``AWS_SECRET_KEY``, ``DATABASE_URL``...)."""
    upper = name.upper()
    parts = set(upper.split("_"))
    return bool(parts & _SECRET_PARTS) or "CONNECTION_STRING" in upper or upper in ("DATABASE_URL", "REDIS_URL")


def daemon_secret_names() -> frozenset[str]:
    """The daemon's own settings that hold a secret."""
    return frozenset(name for name in Settings.model_fields if looks_secret(name))


def extra_plugin_environment(settings: Settings, source: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables ``PLUGIN_EXTRA_ENV`` adds to every plugin's environment.

    Items are separated by commas or spaces (shell quoting keeps a value whole). ``NAME`` copies
    the daemon's variable when it is set; ``NAME=value`` sets it. Raises ``ValueError``, naming
    the item, for a malformed item, a variable the runtime sets itself, a name that looks like
    a credential given without a value, or one of the daemon's own secrets.
    """
    lexer = shlex.shlex(settings.PLUGIN_EXTRA_ENV, posix=True)
    lexer.whitespace += ","
    lexer.whitespace_split = True
    lexer.commenters = ""
    own_secrets = daemon_secret_names()
    env: dict[str, str] = {}
    for item in lexer:
        name, has_value, value = item.partition("=")
        if not _NAME.match(name):
            raise ValueError(f"PLUGIN_EXTRA_ENV: {item!r} is not NAME or NAME=value")
        if name.upper() in _RESERVED:
            raise ValueError(f"PLUGIN_EXTRA_ENV: {name} is set by the local runtime itself and cannot be changed")
        if name.upper() in own_secrets:
            raise ValueError(f"PLUGIN_EXTRA_ENV: {name} is one of the daemon's secrets; it never reaches plugins")
        if has_value:
            env[name] = value
        elif looks_secret(name):
            raise ValueError(
                f"PLUGIN_EXTRA_ENV: {name} looks like a credential and is not copied from the daemon's "
                f"environment; to give plugins a value of their own, write {name}=value"
            )
        elif name in source:
            env[name] = source[name]
    return env
