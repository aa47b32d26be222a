"""A real connector (``local`` provider, loaded through stevedore) and a daemon that deploys to it.

The connector runs in a background thread with uvicorn on a loopback port; its function
processes are children of that thread and are stopped with it. The daemon's port is chosen
first, so the connector can give functions the daemon's URL for their backwards calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plugin_daemon.packages import build_package
from plugin_daemon_serverless.connector.app import create_connector_app
from plugin_daemon_serverless.connector.local.provider import LocalProvider
from plugin_daemon_serverless.connector.options import ConnectorOptions
from plugin_daemon_serverless.connector.provider import load_provider

from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, SHARED_WORK, make_settings
from tests.support.daemon_server import AppServer, DaemonServer, free_port

CONNECTOR_KEY = "connector-key-for-tests-7c1f"
SIGNING_SECRET = "signing-secret-for-tests-19ab"
START_DEADLINE = 30.0
INSTALL_DEADLINE = 600.0


class ConnectorServer(AppServer):
    """``plugin-daemon connector --provider local`` in a thread; ``client`` carries the key."""

    def __init__(self, home: Path, *, daemon_url: str, port: int | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        values: dict[str, Any] = {
            "api_key": CONNECTOR_KEY,
            "public_url": self.url,
            "home": home,
            "daemon_url": daemon_url,
            "working_path": SHARED_WORK,
            "start_timeout": 60.0,
        }
        values.update(options)
        self.options = ConnectorOptions(**values)
        provider = load_provider("local", self.options)
        assert isinstance(provider, LocalProvider)
        self.provider: LocalProvider = provider
        super().__init__(
            create_connector_app(provider, self.options), "connector", {"Authorization": CONNECTOR_KEY}, port=self.port
        )

    def functions(self) -> dict[str, dict[str, Any]]:
        response = self.client.get("/v1/emulator/functions")
        response.raise_for_status()
        return response.json()["functions"]

    def function_of(self, plugin: str) -> dict[str, Any]:
        """The function whose identifier names ``tester/<plugin>``."""
        matches = [f for f in self.functions().values() if f["identifier"].startswith(f"tester/{plugin}:")]
        assert len(matches) == 1, self.functions()
        return matches[0]


@contextmanager
def running_connector(
    home: Path, *, daemon_url: str, port: int | None = None, **options: Any
) -> Iterator[ConnectorServer]:
    connector = ConnectorServer(home, daemon_url=daemon_url, port=port, **options).start()
    try:
        yield connector
    finally:
        connector.stop()


def serverless_settings(home: Path, connector: ConnectorServer, **overrides: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {
        "SERVER_KEY": TEST_KEY,
        "PLATFORM": "serverless",
        "DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL": connector.url,
        "DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY": CONNECTOR_KEY,
        "DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET": connector.options.signing_secret,
        "SERVERLESS_RETRY_BACKOFF_MS": 50,
        "DIFY_INNER_API_KEY": "inner-key",
        "DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT": 5000,
    }
    values.update(overrides)
    return make_settings(home, **values)


def install(server: DaemonServer, plugin: str, tenant: str, *, meta: dict[str, Any] | None = None) -> str:
    identifier = envelope(upload(server.client, build_package(PLUGINS / plugin), tenant))["unique_identifier"]
    started = envelope(
        server.client.post(
            f"/plugin/{tenant}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [meta or {}]},
        )
    )
    task = wait_task(server.client, started["task_id"], tenant, timeout=INSTALL_DEADLINE)
    assert task["status"] == "success", task
    return identifier
