"""Helpers of the local runtime tests (imported by the tests and by conftest)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import anyio
from plugin_daemon.config import Settings
from plugin_daemon.packages import build_package, decode_package
from plugin_daemon.protocol.messages import encode_request
from plugin_daemon.runtime import PluginSpec, SessionEvent

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
CACHE = Path(os.environ.get("PLUGIN_DAEMON_TEST_CACHE", "~/.cache/plugin-daemon-tests")).expanduser()
SHARED_WORK = CACHE / "local-runtime" / "cwd"
#: Building a venv from scratch (PyPI downloads) may take this long.
BUILD_TIMEOUT = 600


def make_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "PLUGIN_DAEMON_HOME": home,
        "PLUGIN_WORKING_PATH": SHARED_WORK,
        "PLUGIN_READY_TIMEOUT": 60.0,
        "PLUGIN_REMOTE_INSTALLING_PORT": 0,  # a free port: a taken one stops the start
        "FORCE_VERIFYING_SIGNATURE": False,  # the test plugins are unsigned
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def package_spec(folder: Path, package_dir: Path) -> PluginSpec:
    """The PluginSpec of the plugin in ``folder``, packaged as a .difypkg in ``package_dir``."""
    return spec_of_package(build_package(folder), package_dir / f"{folder.name}.difypkg")


def spec_of_package(data: bytes, path: Path) -> PluginSpec:
    """The PluginSpec of the package ``data``, written to ``path`` (as the daemon keeps packages)."""
    decoded = decode_package(data)
    path.write_bytes(data)
    declaration = decoded.declaration
    return PluginSpec(
        identifier=str(decoded.identifier),
        plugin_id=f"{declaration['author']}/{declaration['name']}",
        checksum=decoded.checksum,
        declaration=declaration,
        package_path=path,
    )


def tool_request(session_id: str, provider: str, tool: str, parameters: dict[str, Any]) -> bytes:
    return encode_request(
        session_id,
        {
            "user_id": "user-1",
            "type": "tool",
            "action": "invoke_tool",
            "provider": provider,
            "tool": tool,
            "tool_parameters": parameters,
            "credentials": {},
            "credential_type": "api-key",
        },
    )


async def invoke(
    runtime: Any, spec: PluginSpec, tool: str, parameters: dict[str, Any] | None = None, *, timeout: float = 30
) -> list[SessionEvent]:
    """One tool call through ``open_session``; every event until the iteration ends."""
    session_id = uuid.uuid4().hex
    provider = spec.declaration["name"]
    channel = await runtime.open_session(
        spec.identifier, session_id, tool_request(session_id, provider, tool, parameters or {})
    )
    events = []
    with anyio.fail_after(timeout):
        async for event in channel:
            events.append(event)
    return events


def texts(events: list[SessionEvent]) -> list[str]:
    return [e.data["message"]["text"] for e in events if e.kind.value == "stream" and e.data.get("type") == "text"]
