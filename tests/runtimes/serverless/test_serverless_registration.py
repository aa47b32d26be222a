"""The serverless extension registers its runtime, its route and its command like a third party,
and a daemon without a connector fails serverless installs truthfully, at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_daemon.packages import build_package
from plugin_daemon.plugins import load_extensions
from starlette.routing import Route

from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings
from tests.support.daemon_server import running_daemon


def test_entry_point_registers_runtime_route_and_command() -> None:
    manager = load_extensions()
    assert "serverless" in manager.runtime_factories()
    paths = [route.path for route in manager.routes() if isinstance(route, Route)]
    assert "/backwards-invocation/transaction" in paths
    import click

    group = click.Group()
    manager.add_commands(group)
    assert "connector" in group.commands


def test_install_without_a_connector_fails_with_the_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, SERVER_KEY="k" * 24, PLATFORM="serverless")
    with running_daemon(settings) as server:
        assert server.daemon.control_panel.runtime("serverless").health()["connector"] == ""
        identifier = envelope(upload(server.client, build_package(PLUGINS / "echo_tool"), "t"))["unique_identifier"]
        started = envelope(
            server.client.post(
                "/plugin/t/management/install/identifiers",
                json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
            )
        )
        task = wait_task(server.client, started["task_id"], "t", timeout=30)
    assert task["status"] == "failed"
    assert "DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL is not set" in task["plugins"][0]["message"]


@pytest.mark.parametrize("runtime_type", ["nope"])
def test_unknown_runtime_in_metas_fails_the_install(tmp_path: Path, runtime_type: str) -> None:
    settings = make_settings(tmp_path, SERVER_KEY="k" * 24, PLATFORM="serverless")
    with running_daemon(settings) as server:
        identifier = envelope(upload(server.client, build_package(PLUGINS / "echo_tool"), "t"))["unique_identifier"]
        started = envelope(
            server.client.post(
                "/plugin/t/management/install/identifiers",
                json={
                    "plugin_unique_identifiers": [identifier],
                    "source": "package",
                    "metas": [{"runtime_type": runtime_type}],
                },
            )
        )
        task = wait_task(server.client, started["task_id"], "t", timeout=30)
    assert task["status"] == "failed" and "runtime 'nope' is not loaded" in task["plugins"][0]["message"]
