"""The ``{code, message, data}`` envelope of every answer, and its SSE form."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from plugin_daemon.errors import DaemonError

SUCCESS_PREFIX = b'{"code":0,"message":"success","data":'


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def success(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "success", "data": data})


def failure(error: DaemonError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.http_status)


def sse_success(data: Any) -> bytes:
    """One ``data:`` event carrying a success envelope."""
    return b"data: " + SUCCESS_PREFIX + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS) + b"}\n\n"


def sse_failure(error: DaemonError) -> bytes:
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\n"
