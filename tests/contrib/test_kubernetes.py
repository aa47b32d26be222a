"""The ``kubernetes`` provider against a stand-in Kubernetes API on loopback (no cluster is reachable
here): what it applies (server-side apply of a Deployment and a Service, or a Knative Service
where Knative is installed), and the function those objects describe, run here from the pod
template by the stand-in (the runner fetching the package from the connector, building it and
serving the SDK's serverless mode), answering a call made as the Go daemon makes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from plugin_daemon.config import load_settings
from plugin_daemon.packages import build_package, decode_package
from plugin_daemon_kubernetes.provider import KubernetesProvider, memory_quantity, object_name, package_token
from plugin_daemon_local.environment import find_uv
from plugin_daemon_serverless.connector.app import create_connector_app
from plugin_daemon_serverless.connector.options import ConnectorOptions
from plugin_daemon_serverless.connector.provider import load_provider
from plugin_daemon_serverless.connector_client import ConnectorClient
from plugin_daemon_serverless.sri import FunctionInfo, package_filename

from tests.runtimes.local.local_runtime_support import PLUGINS, SHARED_WORK, tool_request
from tests.support.daemon_server import AppServer, free_port
from tests.support.go_sri import GoSRIClient
from tests.support.kube_api import KubeAPIStandIn

CONNECTOR_KEY = "kube-connector-key-9d3a"
IMAGE = "dify-plugin-runner:test"
NAMESPACE = "plugins"
LAUNCH_DEADLINE = 600.0


def test_names_and_quantities() -> None:
    name = object_name("some_author@" + "n" * 100 + "@1.0.0@" + "e" * 64 + ".difypkg")
    assert len(name) <= 63 and name.startswith("dify-some-author-n") and name.endswith("-" + "e" * 12)
    assert memory_quantity({"resource": {"memory": 268435456}}) == "256Mi"
    assert memory_quantity({"resource": {"memory": 268435457}}) == "257Mi"
    assert memory_quantity({}) is None


@pytest.fixture(scope="module")
def echo_package() -> tuple[str, bytes]:
    data = build_package(PLUGINS / "echo_tool")
    return str(decode_package(data).identifier), data


class Cluster:
    def __init__(self, api: KubeAPIStandIn, connector: AppServer, provider: KubernetesProvider) -> None:
        self.api, self.connector, self.provider = api, connector, provider


def kube_cluster(tmp: Path, *, knative: bool, daemon_url: str = "http://daemon.invalid:5002") -> Iterator[Cluster]:
    uv_dir = str(Path(find_uv(load_settings(PLUGIN_DAEMON_HOME=tmp))).parent)
    # the node's uv cache: the one the local runtime's tests keep warm
    api = KubeAPIStandIn(
        knative=knative, extra_path=uv_dir, node_env={"UV_CACHE_DIR": str(SHARED_WORK / ".uv-cache")}
    ).start()
    port = free_port()
    options = ConnectorOptions(
        api_key=CONNECTOR_KEY,
        public_url=f"http://127.0.0.1:{port}",
        home=tmp,
        daemon_url=daemon_url,
        function_timeout=600.0,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBERNETES_API_URL", api.url)
        patch.setenv("KUBERNETES_RUNNER_IMAGE", IMAGE)
        patch.setenv("KUBERNETES_NAMESPACE", NAMESPACE)
        patch.setenv("KUBERNETES_READY_TIMEOUT", "200")  # a pod that never gets ready fails the launch in time
        # the API server's service proxy: a URL that exists here (in a cluster: http://{name}.{namespace}.svc:8080)
        patch.setenv(
            "KUBERNETES_SERVICE_URL", f"{api.url}/api/v1/namespaces/{{namespace}}/services/{{name}}:8080/proxy"
        )
        provider = load_provider("kubernetes", options)
        assert isinstance(provider, KubernetesProvider)
        connector = AppServer(
            create_connector_app(provider, options), "kube connector", {"Authorization": CONNECTOR_KEY}, port=port
        ).start()
    try:
        yield Cluster(api, connector, provider)
    finally:
        connector.stop()
        api.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from kube_cluster(tmp_path_factory.mktemp("kube-connector"), knative=False)


@pytest.fixture(scope="module")
def knative_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from kube_cluster(tmp_path_factory.mktemp("knative-connector"), knative=True)


def launch(cluster: Cluster, package: tuple[str, bytes]) -> FunctionInfo:
    identifier, data = package

    async def run() -> FunctionInfo:
        async with httpx.AsyncClient() as http:
            client = ConnectorClient(cluster.connector.url, CONNECTOR_KEY, http, launch_timeout=LAUNCH_DEADLINE)
            return await client.launch(identifier, data, verified=False, progress=lambda step: None)

    return anyio.run(run)


def call_echo(endpoint: str, text: str) -> list[dict[str, Any]]:
    """The function called exactly as the Go daemon calls it; its session messages."""
    go = GoSRIClient("http://unused.invalid", CONNECTOR_KEY)
    try:
        result = go.invoke(
            endpoint, "kube-session", "invoke_tool", tool_request("kube-session", "echo_tool", "echo", {"text": text})
        )
    finally:
        go.close()
    assert result.errors == []
    return result.messages


@pytest.mark.slow
def test_a_deployment_and_a_service_per_package(cluster: Cluster, echo_package: tuple[str, bytes]) -> None:
    function = launch(cluster, echo_package)
    name = object_name(package_filename(echo_package[0]))
    assert function.name == name
    applied = {entry["body"]["kind"]: entry for entry in cluster.api.applied}
    assert set(applied) == {"Deployment", "Service"}
    for entry in applied.values():
        assert entry["query"] == {"fieldManager": "plugin-daemon-connector", "force": "true"}
        assert entry["content_type"] == "application/apply-patch+yaml"
        assert entry["body"]["metadata"]["namespace"] == NAMESPACE
        assert entry["body"]["metadata"]["annotations"]["dify.ai/plugin-identifier"] == echo_package[0]
    pod = applied["Deployment"]["body"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert pod["automountServiceAccountToken"] is False
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["DIFY_PLUGIN_DAEMON_URL"] == "http://daemon.invalid:5002"
    assert env["DIFY_PLUGIN_PACKAGE_URL"].startswith(f"{cluster.connector.url}/packages/")
    service = applied["Service"]["body"]["spec"]
    assert service["selector"] == applied["Deployment"]["body"]["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["port"] == 8080
    assert function.endpoint == cluster.api.proxy_url(NAMESPACE, name)
    messages = call_echo(function.endpoint, "from kubernetes")
    assert [m["type"] for m in messages] == ["stream", "end"]
    assert messages[0]["data"]["message"] == {"text": "from kubernetes"}


@pytest.mark.slow
def test_a_second_launch_finds_the_deployment(cluster: Cluster, echo_package: tuple[str, bytes]) -> None:
    first = launch(cluster, echo_package)
    applied = len(cluster.api.applied)
    assert launch(cluster, echo_package) == first
    assert len(cluster.api.applied) == applied  # nothing applied again
    go = GoSRIClient(cluster.connector.url, CONNECTOR_KEY)
    try:
        found = go.fetch_function(package_filename(echo_package[0]))
    finally:
        go.close()
    assert found is not None and found["function_url"] == first.endpoint


@pytest.mark.slow
def test_the_package_link_needs_its_token(cluster: Cluster, echo_package: tuple[str, bytes]) -> None:
    launch(cluster, echo_package)
    filename = package_filename(echo_package[0])
    good = httpx.get(
        f"{cluster.connector.url}/packages/{filename}", params={"token": package_token(CONNECTOR_KEY, filename)}
    )
    assert good.status_code == 200 and good.content == echo_package[1]
    for token in ("", "0" * 64, package_token("another-key", filename)):
        refused = httpx.get(f"{cluster.connector.url}/packages/{filename}", params={"token": token})
        assert refused.status_code == 404 and echo_package[1] not in refused.content


@pytest.mark.slow
def test_a_knative_service_where_knative_is_installed(
    knative_cluster: Cluster, echo_package: tuple[str, bytes]
) -> None:
    function = launch(knative_cluster, echo_package)
    kinds = [(entry["body"]["apiVersion"], entry["body"]["kind"]) for entry in knative_cluster.api.applied]
    assert kinds == [("serving.knative.dev/v1", "Service")]
    template = knative_cluster.api.applied[0]["body"]["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert template["spec"]["timeoutSeconds"] == 600
    assert template["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi"
    messages = call_echo(function.endpoint, "from knative")
    assert messages[0]["data"]["message"] == {"text": "from knative"}


def test_the_provider_needs_an_image_and_an_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = ConnectorOptions(api_key="k", public_url="http://x", home=tmp_path)
    monkeypatch.delenv("KUBERNETES_RUNNER_IMAGE", raising=False)
    with pytest.raises(ValueError, match="KUBERNETES_RUNNER_IMAGE"):
        load_provider("kubernetes", options)
    monkeypatch.setenv("KUBERNETES_RUNNER_IMAGE", IMAGE)
    monkeypatch.delenv("KUBERNETES_API_URL", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="KUBERNETES_API_URL"):
        load_provider("kubernetes", options)
