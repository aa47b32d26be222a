"""Errors of the serverless runtime that reach Dify."""

from __future__ import annotations

from plugin_daemon.errors import DaemonError


class ServerlessPayloadTooLarge(DaemonError):
    """A request over ``MAX_SERVERLESS_REQUEST_BYTES``, refused before it was sent."""

    code = -413
    error_type = "ServerlessPayloadTooLargeError"
