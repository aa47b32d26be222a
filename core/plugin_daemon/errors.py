"""Errors the daemon reports to its callers, in the Go daemon's vocabulary.

Dify parses ``json.loads(envelope["message"])`` to get ``error_type`` and ``message``; for
``PluginInvokeError`` it parses that inner ``message`` once more to find the plugin's own error.
"""

from __future__ import annotations

from typing import Any

import orjson


class DaemonError(Exception):
    """An error with its Dify envelope code, error type and HTTP status."""

    code = -500
    error_type = "PluginDaemonInternalServerError"
    http_status = 200

    def __init__(self, message: str, *, args: Any = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = args
        if http_status is not None:
            self.http_status = http_status

    def envelope_message(self) -> str:
        return orjson.dumps({"message": self.message, "error_type": self.error_type, "args": self.details}).decode()

    def envelope(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.envelope_message(), "data": None}


class BadRequest(DaemonError):
    code = -400
    error_type = "PluginDaemonBadRequestError"


class Unauthorized(DaemonError):
    code = -401
    error_type = "PluginDaemonUnauthorizedError"
    http_status = 401


class PermissionDenied(DaemonError):
    code = -403
    error_type = "PluginPermissionDeniedError"


class NotFound(DaemonError):
    code = -404
    error_type = "PluginDaemonNotFoundError"


class MethodNotAllowed(DaemonError):
    code = -405
    error_type = "PluginDaemonMethodNotAllowedError"
    http_status = 405


class PluginNotFound(DaemonError):
    code = -404
    error_type = "PluginNotFoundError"


class UniqueIdentifierError(DaemonError):
    code = -400
    error_type = "PluginUniqueIdentifierError"


class InternalError(DaemonError):
    code = -500
    error_type = "PluginDaemonInternalServerError"


def internal_error(exc: BaseException) -> InternalError:
    """What a caller is told of an unexpected failure: its kind only. The exception's own text can
    carry SQL, paths or values, so it goes to the daemon's log, never into an answer."""
    return InternalError(f"internal error ({type(exc).__name__}); the daemon's log has the details")


class PluginInvokeError(DaemonError):
    """A plugin's own error; ``message`` is the JSON of ``{args, error_type, message}`` it sent."""

    code = -500
    error_type = "PluginInvokeError"

    @classmethod
    def from_plugin(cls, payload: Any) -> PluginInvokeError:
        if not isinstance(payload, dict):
            payload = {"error_type": "unknown", "message": str(payload), "args": {}}
        inner = {
            "args": payload.get("args") or {},
            "error_type": payload.get("error_type") or "unknown",
            "message": payload.get("message") or "",
        }
        return cls(orjson.dumps(inner).decode())
