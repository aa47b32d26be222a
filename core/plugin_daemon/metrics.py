"""Prometheus metrics with the Go daemon's names and labels (``pkg/utils/metrics/metrics.go``).

An operator's dashboards keep working after the switch. Counting costs a dictionary update per
event (no locks: everything runs on the event loop); gauges of what is running now (sessions,
plugins) are read at scrape time and cost nothing per call. ``GET /metrics`` renders the text
exposition format (served when ``PROMETHEUS_ENABLED``, without a key, as Go).
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon
    from plugin_daemon.sessions import Session

#: prometheus.DefBuckets, which Go's histograms use
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.labels = name, help_text, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n"
        for labels, value in self.values.items():
            yield f"{self.name}{_labels(self.labels, labels)} {_number(value)}\n"


class Histogram:
    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...] = DEFAULT_BUCKETS
    ) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        #: per label set: a count per bucket (the last one is +Inf), then the sum
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        slots = self.values.get(labels)
        if slots is None:
            slots = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        slots[bisect_left(self.buckets, value)] += 1
        slots[-1] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n"
        for labels, slots in self.values.items():
            cumulative = 0.0
            for bound, count in zip((*self.buckets, float("inf")), slots, strict=False):
                cumulative += count
                le = 'le="+Inf"' if bound == float("inf") else f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.labels, labels, le)} {_number(cumulative)}\n"
            yield f"{self.name}_sum{_labels(self.labels, labels)} {repr(slots[-1])}\n"
            yield f"{self.name}_count{_labels(self.labels, labels)} {_number(cumulative)}\n"


class Gauge:
    """A gauge whose values are read when scraped."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        collect: Callable[[Daemon], dict[tuple[str, ...], float]],
    ) -> None:
        self.name, self.help, self.labels, self.collect = name, help_text, labels, collect

    def render(self, daemon: Daemon) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} gauge\n"
        for labels, value in self.collect(daemon).items():
            yield f"{self.name}{_labels(self.labels, labels)} {_number(value)}\n"


HTTP_REQUESTS = Counter("plugin_http_requests_total", "Total number of HTTP requests", ("method", "endpoint", "status"))
HTTP_DURATION = Histogram(
    "plugin_http_request_duration_seconds", "HTTP request latency in seconds", ("method", "endpoint")
)
INVOCATIONS = Counter(
    "plugin_invocations_total",
    "Total number of plugin invocations",
    ("plugin_id", "plugin_type", "runtime_type", "operation", "status"),
)
INVOCATION_DURATION = Histogram(
    "plugin_invocation_duration_seconds",
    "Plugin invocation latency in seconds",
    ("plugin_id", "plugin_type", "runtime_type", "operation"),
)
INSTALLATIONS = Counter("plugin_installations_total", "Total number of plugin installations", ("plugin_id", "status"))
INSTALLATION_DURATION = Histogram(
    "plugin_installation_duration_seconds", "Plugin installation latency in seconds", ("plugin_id",)
)
RESTARTS = Counter("plugin_restarts_total", "Total number of plugin restarts", ("plugin_id", "runtime_type"))


def _active_invocations(daemon: Daemon) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for session in daemon.sessions.list():
        key = (session.plugin_id, session.access_type, session.runtime_type)
        found[key] = found.get(key, 0) + 1
    return found


def _active_sessions(daemon: Daemon) -> dict[tuple[str, ...], float]:
    return {(): float(len(daemon.sessions))}


def _runtime_status(daemon: Daemon) -> dict[tuple[str, ...], float]:
    values = {"ready": 1.0, "starting": 0.5, "restarting": 0.5}
    return {
        (plugin_id, name): values.get(state, 0.0)
        for name, runtime in daemon.control_panel.runtimes.items()
        for plugin_id, state in runtime.instance_states().items()
    }


def _active_plugins(daemon: Daemon) -> dict[tuple[str, ...], float]:
    return {
        (name,): float(sum(1 for state in runtime.instance_states().values() if state == "ready"))
        for name, runtime in daemon.control_panel.runtimes.items()
    }


GAUGES = (
    Gauge(
        "plugin_invocations_active",
        "Number of active plugin invocations",
        ("plugin_id", "plugin_type", "runtime_type"),
        _active_invocations,
    ),
    Gauge(
        "plugin_runtime_status",
        "Current status of plugin runtime (1=active, 0.5=launching, 0=stopped)",
        ("plugin_id", "runtime_type"),
        _runtime_status,
    ),
    Gauge("active_plugins_total", "Total number of active plugins", ("runtime_type",), _active_plugins),
    Gauge("active_sessions_total", "Total number of active sessions", (), _active_sessions),
)
RECORDED: tuple[Counter | Histogram, ...] = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    INVOCATIONS,
    INVOCATION_DURATION,
    INSTALLATIONS,
    INSTALLATION_DURATION,
    RESTARTS,
)


def session_ended(session: Session, status: str) -> None:
    """Count one plugin invocation (Go: success, error or timeout) and its duration."""
    plugin_id, plugin_type, runtime_type, operation = (
        session.plugin_id,
        session.access_type,
        session.runtime_type,
        session.action,
    )
    INVOCATIONS.inc((plugin_id, plugin_type, runtime_type, operation, status))
    INVOCATION_DURATION.observe(
        (plugin_id, plugin_type, runtime_type, operation), time.monotonic() - session.created_at
    )


def render(daemon: Daemon) -> str:
    parts: list[str] = []
    for metric in RECORDED:
        parts.extend(metric.render())
    for gauge in GAUGES:
        parts.extend(gauge.render(daemon))
    return "".join(parts)


async def metrics_route(request: Request) -> Response:
    return Response(render(request.app.state.daemon), media_type=CONTENT_TYPE)


_TEMPLATES: dict[str, str] = {}  # route pattern -> Go's form, one entry per route of the app
_CATCH_ALL = re.compile(r"\{(\w+):path\}")
_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def route_template(scope: Scope) -> str:
    """Go's route label (gin's FullPath: ``/plugin/:tenant_id/dispatch/tool/invoke``); empty when
    no route matched."""
    route = scope.get("route")
    if route is not None:
        pattern: str = getattr(route, "path", "")
        template = _TEMPLATES.get(pattern)
        if template is None:  # once per route
            template = _TEMPLATES[pattern] = _PARAMETER.sub(r":\1", _CATCH_ALL.sub(r"*\1", pattern))
        return template
    path = scope["path"]
    params = scope.get("path_params")
    if params is None:
        return ""
    if "tenant_id" in params:  # the dispatch fast path: /plugin/<tenant>/dispatch/...
        return "/plugin/:tenant_id/" + path.split("/", 3)[3]
    return path if path.startswith("/v2/invoke/dispatch/") else ""


class HttpMetricsMiddleware:
    """Counts every HTTP request by method, route and status, with its duration (Go's labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method, endpoint = scope["method"], route_template(scope)
            HTTP_REQUESTS.inc((method, endpoint, str(status)))
            HTTP_DURATION.observe((method, endpoint), time.perf_counter() - started)
