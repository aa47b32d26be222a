"""``GET /health/check``: what an operator or a load balancer asks first.

Without a key it answers what Go's does (status, version, platform, request counts) and, when
something is broken, what (``problems``, naming no plugin or tenant). With the server key in
``X-Api-Key`` it adds each runtime's details (plugins, processes, memory, last errors).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from plugin_daemon import __version__
from plugin_daemon.api.envelope import JSONResponse


async def health_check(request: Request) -> Response:
    daemon = request.app.state.daemon
    runtimes = daemon.control_panel.runtimes
    problems = [problem for runtime in runtimes.values() for problem in runtime.problems()]
    answer = {
        "status": "degraded" if problems else "ok",
        "version": __version__,
        "platform": daemon.settings.PLATFORM,
        "active_requests": len(daemon.sessions),
        "active_dispatch_requests": len(daemon.sessions),
    }
    if problems:
        answer["problems"] = problems
    supplied = request.headers.get("x-api-key", "").encode()
    if supplied and hmac.compare_digest(supplied, daemon.settings.SERVER_KEY.encode()):
        answer["runtimes"] = {name: runtime.health() for name, runtime in runtimes.items()}
    return JSONResponse(answer)
