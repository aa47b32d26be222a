"""The exceptions a test sees when the daemon or the plugin under test says no."""

from __future__ import annotations

from typing import Any


class PluginTestingError(Exception):
    """Base class of every error this pytest plugin raises."""


class PluginInstallError(PluginTestingError):
    """The plugin folder could not be packaged, uploaded or installed (``task`` is the install task, if any)."""

    def __init__(self, message: str, *, task: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.task = task


class PluginCallError(PluginTestingError):
    """A call into the plugin ended with an error.

    ``error_type`` and ``message`` are the daemon's, read from the Dify envelope
    (``{"code": -500, "message": "{\\"error_type\\": ..., \\"message\\": ...}"}``). When the plugin itself
    raised (``error_type == "PluginInvokeError"``), ``plugin_error_type`` and ``plugin_message`` are the
    plugin's own exception class name and message (e.g. ``ValueError`` / ``boom``); otherwise they are None.
    ``items`` holds the ``data`` items the plugin streamed before the error.
    """

    def __init__(
        self,
        path: str,
        *,
        code: int,
        error_type: str,
        message: str,
        plugin_error_type: str | None = None,
        plugin_message: str | None = None,
        items: list[Any] | None = None,
    ) -> None:
        self.path = path
        self.code = code
        self.error_type = error_type
        self.message = message
        self.plugin_error_type = plugin_error_type
        self.plugin_message = plugin_message
        self.items = items or []
        if plugin_error_type is not None:
            text = f"{path}: the plugin raised {plugin_error_type}: {plugin_message}"
        else:
            text = f"{path}: {error_type}: {message}"
        super().__init__(text)
