"""A third-party style extension for the tests: registers the in-memory runtime under "memory"
through the ``plugin_daemon`` entry-point group, exactly as an outside package would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from plugin_daemon.hookspecs import hookimpl
from plugin_daemon.runtime_memory import MemoryRuntime


async def echo_tool(data: dict[str, Any]) -> AsyncIterator[Any]:
    parameters = data.get("tool_parameters") or {}
    yield {"type": "text", "message": {"text": str(parameters.get("text", ""))}, "meta": None}


async def validate(data: dict[str, Any]) -> AsyncIterator[Any]:
    yield {"result": (data.get("credentials") or {}).get("api_key") != "bad"}


def build(daemon: Any) -> MemoryRuntime:
    return MemoryRuntime({("tool", "invoke_tool"): echo_tool, ("tool", "validate_tool_credentials"): validate})


@hookimpl
def plugin_daemon_register_runtimes(register: Any) -> None:
    register("memory", build)
