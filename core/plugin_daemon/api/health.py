"""``GET /health/check``: no auth; what an operator or a load balancer asks first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from plugin_daemon import __version__
from plugin_daemon.api.envelope import JSONResponse


async def health_check(request: Request) -> Response:
    daemon = request.app.state.daemon
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "platform": daemon.settings.PLATFORM,
            "runtimes": {name: runtime.health() for name, runtime in daemon.control_panel.runtimes.items()},
            "active_requests": len(daemon.sessions),
            "active_dispatch_requests": len(daemon.sessions),
        }
    )
