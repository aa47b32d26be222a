"""Calling an installed plugin through the daemon's dispatch API, as the Dify API server does."""

from __future__ import annotations

import json
from typing import Any

import httpx

from pytest_plugin_daemon.errors import PluginCallError


class PluginClient:
    """An installed plugin, seen from Dify: every call goes through the daemon to the plugin's process.

    Each method returns the ``data`` items of the daemon's answer and raises :class:`PluginCallError`
    when the answer carries an error (the plugin raised, the tool does not exist, the daemon refused).
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        tenant: str,
        identifier: str,
        plugin_id: str,
        declaration: dict[str, Any],
        user_id: str = "pytest-user",
        timeout: float = 120.0,
    ) -> None:
        self.http = http
        self.tenant = tenant
        #: ``author/name:version@checksum``
        self.identifier = identifier
        #: ``author/name``
        self.plugin_id = plugin_id
        #: the plugin's manifest, as the daemon decoded it
        self.declaration = declaration
        self.user_id = user_id
        #: seconds one call may take, its whole answer included
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PluginClient({self.identifier!r}, tenant={self.tenant!r})"

    def invoke_tool(
        self,
        provider: str,
        tool: str,
        parameters: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        *,
        credential_type: str = "api-key",
    ) -> list[dict[str, Any]]:
        """Run ``tool`` of ``provider``; the tool's messages (``{"type", "message", "meta"}`` dicts)."""
        __tracebackhide__ = True  # a failing test points at its own line, not at this client
        return self.dispatch(
            "tool/invoke",
            {
                "provider": provider,
                "tool": tool,
                "tool_parameters": parameters or {},
                "credentials": credentials or {},
                "credential_type": credential_type,
            },
        )

    def validate_tool_credentials(self, provider: str, credentials: dict[str, Any]) -> bool:
        """True when the provider accepts ``credentials``; a refusal raises :class:`PluginCallError`."""
        __tracebackhide__ = True
        items = self.dispatch("tool/validate_credentials", {"provider": provider, "credentials": credentials})
        return bool(items and items[-1].get("result"))

    def dispatch(self, path: str, data: dict[str, Any]) -> list[Any]:
        """POST ``data`` to ``/plugin/{tenant}/dispatch/{path}`` (``tool/invoke``, ``llm/invoke``, ...).

        Returns the ``data`` item of every event of the answer, in order.
        """
        __tracebackhide__ = True
        path = path.strip("/")
        response = self.http.post(
            f"/plugin/{self.tenant}/dispatch/{path}",
            headers={"X-Plugin-ID": self.plugin_id},
            json={"user_id": self.user_id, "data": data},
            timeout=self.timeout,
        )
        return read_answer(path, response)


def read_answer(path: str, response: httpx.Response) -> list[Any]:
    """The ``data`` items of a dispatch answer (SSE events or one JSON envelope); errors raised."""
    __tracebackhide__ = True
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [_json(path, line[len("data:") :]) for line in response.text.splitlines() if line.startswith("data:")]
    else:
        events = [_json(path, response.text)]
    items: list[Any] = []
    for event in events:
        if not isinstance(event, dict) or "code" not in event:
            raise PluginCallError(
                path, code=response.status_code, error_type="UnexpectedAnswer", message=str(event)[:2000], items=items
            )
        if event["code"] != 0:
            raise _call_error(path, event, items)
        items.append(event.get("data"))
    return items


def _call_error(path: str, event: dict[str, Any], items: list[Any]) -> PluginCallError:
    raw = event.get("message")
    outer = _maybe_json(raw)
    if not isinstance(outer, dict):
        return PluginCallError(path, code=event["code"], error_type="unknown", message=str(raw), items=items)
    error_type = str(outer.get("error_type", "unknown"))
    message = str(outer.get("message", ""))
    plugin_error_type = plugin_message = None
    if error_type == "PluginInvokeError":
        inner = _maybe_json(message)
        if isinstance(inner, dict):
            plugin_error_type = str(inner.get("error_type", "unknown"))
            plugin_message = str(inner.get("message", ""))
    return PluginCallError(
        path,
        code=event["code"],
        error_type=error_type,
        message=message,
        plugin_error_type=plugin_error_type,
        plugin_message=plugin_message,
        items=items,
    )


def _json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise PluginCallError(path, code=-1, error_type="UnexpectedAnswer", message=text[:2000]) from None


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
