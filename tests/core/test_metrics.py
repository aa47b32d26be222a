"""/metrics: Go's metric names and labels, with real counts after real calls."""

from __future__ import annotations

import re

import httpx
from plugin_daemon.packages import build_package

from tests.core.test_management_api import ECHO_TOOL, TENANT, envelope, install, sse_items, upload
from tests.support.daemon_server import running_daemon

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, keyed by name and labels."""
    response = httpx.get(f"{url}/metrics")  # no key, as Go
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_invocations_and_installs_with_go_s_names(make_settings) -> None:  # type: ignore[no-untyped-def]
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        before = scrape(server.url)
        identifier = envelope(upload(server.client, build_package(ECHO_TOOL)))["unique_identifier"]
        assert install(server.client, identifier)["status"] == "success"
        for _ in range(3):
            answer = server.client.post(
                f"/plugin/{TENANT}/dispatch/tool/invoke",
                headers={"X-Plugin-ID": "tester/echo_tool"},
                json={"user_id": "u1", "data": {"provider": "echo_tool", "tool": "echo", "tool_parameters": {}}},
            )
            assert sse_items(answer)[-1]["code"] == 0
        after = scrape(server.url)
        types = {line.split()[2] for line in httpx.get(f"{server.url}/metrics").text.splitlines() if "# TYPE" in line}

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    dispatch = {"method": "POST", "endpoint": "/plugin/:tenant_id/dispatch/tool/invoke"}
    assert grew("plugin_http_requests_total", **dispatch, status="200") == 3
    assert grew("plugin_http_request_duration_seconds_count", **dispatch) == 3
    upload_route = {"method": "POST", "endpoint": "/plugin/:tenant_id/management/install/upload/package"}
    assert grew("plugin_http_requests_total", **upload_route, status="200") == 1
    tool = {"plugin_id": "tester/echo_tool", "plugin_type": "tool", "runtime_type": "memory"}
    assert grew("plugin_invocations_total", **tool, operation="invoke_tool", status="success") == 3
    assert grew("plugin_invocation_duration_seconds_count", **tool, operation="invoke_tool") == 3
    assert grew("plugin_invocation_duration_seconds_bucket", **tool, operation="invoke_tool", le="+Inf") == 3
    assert grew("plugin_installations_total", plugin_id="tester/echo_tool", status="success") == 1
    assert value(after, "active_sessions_total") == 0
    assert {
        "plugin_restarts_total",
        "active_plugins_total",
        "plugin_runtime_status",
        "plugin_invocations_active",
    } <= types


def test_metrics_can_be_switched_off(make_settings) -> None:  # type: ignore[no-untyped-def]
    with running_daemon(make_settings(PROMETHEUS_ENABLED=False)) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 404
