"""The conformance suite through the ``kubernetes`` provider: a serverless daemon deploys echo_tool
through the connector to the stand-in Kubernetes API, whose pod (the runner, run here) serves it
behind the API server's service-proxy path and calls the daemon back for storage."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.suite import *  # noqa: F403
from tests.conformance.suite import Target
from tests.conftest import TEST_KEY
from tests.contrib.test_kubernetes import CONNECTOR_KEY, Cluster, kube_cluster
from tests.runtimes.local.local_runtime_support import make_settings
from tests.runtimes.serverless.serverless_support import install
from tests.support.daemon_server import DaemonServer, running_daemon

pytestmark = pytest.mark.slow

TENANT = "tenant-kubernetes"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, daemon_port: int) -> Iterator[Cluster]:
    yield from kube_cluster(
        tmp_path_factory.mktemp("kube-conformance"), knative=False, daemon_url=f"http://127.0.0.1:{daemon_port}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster, daemon_port: int) -> Iterator[DaemonServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("kube-daemon"),
        SERVER_KEY=TEST_KEY,
        PLATFORM="serverless",
        DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL=cluster.connector.url,
        DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY=CONNECTOR_KEY,
        SERVERLESS_RETRY_BACKOFF_MS=500,  # a restarting pod is not ready for a moment: the proxy answers 503
        DIFY_INNER_API_KEY="inner-key",
        SERVERLESS_TRANSACTION_ALLOWED_CIDRS="127.0.0.0/8",
    )
    with running_daemon(settings, port=daemon_port) as running:
        install(running, "echo_tool", TENANT)
        yield running


@pytest.fixture(scope="module")
def conformance(server: DaemonServer) -> Target:
    return Target(server.client, TENANT, flushes_before_crash=False)


def test_installed_as_a_kubernetes_function(server: DaemonServer, cluster: Cluster) -> None:
    kinds = sorted(entry["body"]["kind"] for entry in cluster.api.applied)
    assert kinds == ["Deployment", "Service"]
    listing = server.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}).json()
    assert [item["runtime_type"] for item in listing["data"]["list"]] == ["serverless"]
