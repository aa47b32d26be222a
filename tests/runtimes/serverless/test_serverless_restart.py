"""Restarts: the daemon calls the function URL it kept (no lookup, no deployment); the connector
keeps its registry, so a restarted connector still knows the function and cold-starts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.suite import Target, call_tool, items_of
from tests.runtimes.serverless.serverless_support import install, running_connector, serverless_settings
from tests.support.daemon_server import free_port, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = pytest.mark.slow

TENANT = "tenant-restart"


def test_restarts_do_not_redeploy(home: Path, inner_api: DifyInnerAPI) -> None:
    daemon_port, connector_port = free_port(), free_port()
    daemon_url = f"http://127.0.0.1:{daemon_port}"
    with running_connector(home / "connector", daemon_url=daemon_url, port=connector_port) as connector:
        settings = serverless_settings(home / "daemon", connector, DIFY_INNER_API_URL=inner_api.url)
        with running_daemon(settings, port=daemon_port) as first:
            install(first, "echo_tool", TENANT)
            target = Target(first.client, TENANT)
            assert items_of(call_tool(target, "storage", {"op": "set", "key": "kept", "value": "yes"}))
        launches, lookups = connector.provider.launches, connector.provider.lookups
        assert launches == 1

        with running_daemon(settings, port=daemon_port) as second:
            target = Target(second.client, TENANT)
            assert items_of(call_tool(target, "echo", {"text": "again"}))[0]["message"] == {"text": "again"}
            got = items_of(call_tool(target, "storage", {"op": "get", "key": "kept"}))
            assert got[0]["message"]["json_object"] == {"value": "yes"}
        assert (connector.provider.launches, connector.provider.lookups) == (launches, lookups)

    with running_connector(home / "connector", daemon_url=daemon_url, port=connector_port) as restarted:
        function = restarted.function_of("echo_tool")
        assert function["state"] == "stopped" and function["cold_starts"] == 0
        with running_daemon(settings, port=daemon_port) as third:
            target = Target(third.client, TENANT)
            assert items_of(call_tool(target, "echo", {"text": "cold"}))[0]["message"] == {"text": "cold"}
        assert restarted.provider.launches == 0 and restarted.provider.lookups == 0
        assert restarted.function_of("echo_tool")["cold_starts"] == 1
