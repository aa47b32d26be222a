"""The Starlette application: routes, middleware and the lifespan that runs the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from plugin_daemon import metrics
from plugin_daemon.api import dispatch_routes, endpoint_routes, management
from plugin_daemon.api.access_log import AccessLogMiddleware
from plugin_daemon.api.envelope import JSONResponse, failure
from plugin_daemon.api.health import health_check
from plugin_daemon.api.management import BUNDLE_UPLOAD_SUFFIX
from plugin_daemon.api.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from plugin_daemon.connection_limits import ConcurrencyLimitMiddleware
from plugin_daemon.daemon import Daemon
from plugin_daemon.errors import MethodNotAllowed, NotFound


def _route_named(request: Request) -> str:
    path = request.url.path
    return f"{request.method} {path[:200]}{'...' if len(path) > 200 else ''}"


async def _not_found(request: Request, exc: Exception) -> Response:
    return failure(NotFound(f"route not found: {_route_named(request)}", http_status=404))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return failure(MethodNotAllowed(f"method not allowed: {_route_named(request)}"))


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return await _not_found(request, exc)
    if status == 405:
        return await _method_not_allowed(request, exc)
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return JSONResponse({"code": status, "message": str(detail), "data": None}, status_code=status)


def create_app(daemon: Daemon, *, relaunch: bool = True) -> Starlette:
    """The ASGI app of ``daemon``; its lifespan starts and stops the daemon's runtimes."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with daemon.running(relaunch=relaunch):
            yield

    routes: list[BaseRoute] = [Route("/health/check", health_check, methods=["GET"])]
    if daemon.settings.PROMETHEUS_ENABLED:  # Go serves /metrics/ (and redirects /metrics to it); no key
        routes += [Route(path, metrics.metrics_route, methods=["GET"]) for path in ("/metrics", "/metrics/")]
    routes += management.routes()
    routes += dispatch_routes.routes()
    routes += endpoint_routes.routes(daemon.settings)
    routes += daemon.extensions.routes()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed, HTTPException: _http_error},
    )
    app.state.daemon = daemon
    app.add_middleware(dispatch_routes.DispatchFastPath)  # innermost: after the key and size checks
    app.add_middleware(ApiKeyMiddleware, key=daemon.settings.SERVER_KEY)
    settings = daemon.settings
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.MAX_REQUEST_BODY_SIZE,
        # the bundle and the multipart around it
        limits_by_suffix={BUNDLE_UPLOAD_SUFFIX: settings.MAX_BUNDLE_PACKAGE_SIZE + settings.MAX_REQUEST_BODY_SIZE},
    )
    if settings.PROMETHEUS_ENABLED:
        app.add_middleware(metrics.HttpMetricsMiddleware)  # every answer past the concurrency cap is counted
    # refused at once past the cap, or once shutting down
    app.add_middleware(
        ConcurrencyLimitMiddleware, limit=settings.SERVER_MAX_CONCURRENT_REQUESTS, shutdown=daemon.shutdown
    )
    if settings.ACCESS_LOG:  # outermost: a request refused at the cap is logged too
        app.add_middleware(AccessLogMiddleware)
    return app
