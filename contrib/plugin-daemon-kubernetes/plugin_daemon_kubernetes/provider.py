"""``KubernetesProvider``: each plugin package as a Deployment and a Service, or a Knative Service.

Per package checksum the connector applies (server-side apply, field manager
``plugin-daemon-connector``) either

- a ``Deployment`` of the generic runner image plus a ``ClusterIP`` ``Service`` on port 8080; the
  function URL is ``KUBERNETES_SERVICE_URL`` (default ``http://{name}.{namespace}.svc:8080``); or
- where Knative Serving is installed (``/apis/serving.knative.dev/v1`` answers, or
  ``KUBERNETES_KNATIVE=on``), a ``serving.knative.dev/v1`` ``Service`` that scales to zero; the
  function URL is its ``status.url``.

The pod runs ``runner.py`` (the runner image's command): it fetches the package from this
connector through a link signed for that package (``GET /packages/<filename>?token=...``, HMAC
of the filename with the connector's key), builds the environment and serves the SDK's
serverless mode on port 8080, with ``/health`` as the readiness probe. Memory requests and
limits come from the manifest's ``resource.memory``. The cluster is the registry: objects carry
the package's checksum and identifier as annotations, so a restarted connector finds them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus
from plugin_daemon_serverless.connector.deployments import Deployment, Deployments, check_new_package
from plugin_daemon_serverless.connector.options import ConnectorOptions
from plugin_daemon_serverless.connector.provider import LaunchFailed, Provider
from plugin_daemon_serverless.sri import RUNNING, FunctionInfo, LaunchEvent
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

FIELD_MANAGER = "plugin-daemon-connector"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KNATIVE_API = "/apis/serving.knative.dev/v1"
PORT = 8080
ANNOTATION_CHECKSUM = "dify.ai/plugin-checksum"
ANNOTATION_IDENTIFIER = "dify.ai/plugin-identifier"
LABEL_FUNCTION = "dify.ai/function"
POLL_INTERVAL = 0.5
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def object_name(filename: str) -> str:
    """``author@name@version@checksum.difypkg`` → ``dify-author-name-<12 hex>`` (a DNS-1035 label)."""
    author, name, _version, rest = filename.split("@", 3)
    stem = _UNSAFE.sub("-", f"{author}-{name}".lower().replace("_", "-")).strip("-")[:40].strip("-")
    return f"dify-{stem}-{rest.removesuffix('.difypkg')[:12]}"


def memory_quantity(declaration: dict[str, Any]) -> str | None:
    """``resource.memory`` (bytes) as a Kubernetes quantity in Mi, or None when absent."""
    raw = (declaration.get("resource") or {}).get("memory") or 0
    try:
        mebibytes = math.ceil(int(raw) / (1024 * 1024))
    except (TypeError, ValueError):
        return None
    return f"{mebibytes}Mi" if mebibytes > 0 else None


def package_token(key: str, filename: str) -> str:
    return hmac.new(key.encode(), filename.encode(), hashlib.sha256).hexdigest()


class KubeAPI:
    """The few calls of the Kubernetes REST API the provider makes."""

    def __init__(self) -> None:
        url = os.environ.get("KUBERNETES_API_URL", "").strip()
        verify: bool | str = True
        if not url:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ValueError("the kubernetes provider needs KUBERNETES_API_URL outside a cluster")
            url = f"https://{host}:{port}"
            if (SERVICE_ACCOUNT / "ca.crt").is_file():
                verify = str(SERVICE_ACCOUNT / "ca.crt")
        token = os.environ.get("KUBERNETES_TOKEN", "").strip()
        if not token and (SERVICE_ACCOUNT / "token").is_file():
            token = (SERVICE_ACCOUNT / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, verify=verify, timeout=30.0)
        self.url = url.rstrip("/")

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await self.client.get(path)
        if response.status_code == 404:
            return None
        self._raise(response, "GET", path)
        return dict(response.json())

    async def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.patch(
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            json=body,
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        self._raise(response, "apply", path)
        return dict(response.json())

    @staticmethod
    def _raise(response: httpx.Response, what: str, path: str) -> None:
        if response.status_code >= 400:
            raise LaunchFailed(f"kubernetes {what} {path} answered HTTP {response.status_code}: {response.text[:500]}")


class KubernetesProvider(Provider):
    def __init__(self, options: ConnectorOptions) -> None:
        super().__init__(options)
        self.image = os.environ.get("KUBERNETES_RUNNER_IMAGE", "").strip()
        if not self.image:
            raise ValueError("the kubernetes provider needs KUBERNETES_RUNNER_IMAGE (the generic runner image)")
        self.namespace = os.environ.get("KUBERNETES_NAMESPACE", "").strip() or self._own_namespace()
        self.knative_setting = os.environ.get("KUBERNETES_KNATIVE", "auto").strip().lower()
        if self.knative_setting not in ("auto", "on", "off"):
            raise ValueError("KUBERNETES_KNATIVE must be auto, on or off")
        self.service_url = os.environ.get("KUBERNETES_SERVICE_URL", f"http://{{name}}.{{namespace}}.svc:{PORT}")
        self.replicas = int(os.environ.get("KUBERNETES_REPLICAS", "1"))
        self.ready_timeout = float(os.environ.get("KUBERNETES_READY_TIMEOUT", "600"))
        self.api = KubeAPI()
        self.packages = options.home / "packages"
        self.deployments = Deployments("kubernetes", (LaunchFailed, httpx.HTTPError, OSError, TimeoutError))
        self.knative: bool | None = None

    @staticmethod
    def _own_namespace() -> str:
        path = SERVICE_ACCOUNT / "namespace"
        return path.read_text().strip() if path.is_file() else "default"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.packages.mkdir(parents=True, exist_ok=True)
        self.knative = self.knative_setting == "on" or (
            self.knative_setting == "auto" and await self.api.get(KNATIVE_API) is not None
        )
        log.info("kubernetes provider: namespace %s, %s", self.namespace, "Knative" if self.knative else "Deployments")
        async with anyio.create_task_group() as group:
            self.deployments.group = group
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self.deployments.group = None

    async def aclose(self) -> None:
        await self.api.client.aclose()

    # --- paths --------------------------------------------------------------------------------

    def _paths(self, name: str) -> dict[str, str]:
        ns = self.namespace
        return {
            "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            "service": f"/api/v1/namespaces/{ns}/services/{name}",
            "knative": f"{KNATIVE_API}/namespaces/{ns}/services/{name}",
        }

    # --- the SRI ------------------------------------------------------------------------------

    async def find(self, filename: str) -> FunctionInfo | None:
        name = object_name(filename)
        checksum = filename.rsplit("@", 1)[1].removesuffix(".difypkg")
        paths = self._paths(name)
        found = await self.api.get(paths["knative"] if self.knative else paths["deployment"])
        if found is None or (found.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_CHECKSUM) != checksum:
            return None
        endpoint, state = self._endpoint_and_state(name, found)
        if not endpoint:
            return None
        return FunctionInfo(
            id=checksum[:32],
            name=name,
            endpoint=endpoint,
            resource_name=paths["knative" if self.knative else "deployment"],
            state=state,
        )

    def _endpoint_and_state(self, name: str, found: dict[str, Any]) -> tuple[str, str]:
        status = found.get("status") or {}
        if self.knative:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            return (str(status.get("url") or "") if ready else ""), ("Ready" if ready else "NotReady")
        available = int(status.get("availableReplicas") or 0)
        url = self.service_url.format(name=name, namespace=self.namespace)
        return (url if available > 0 else ""), f"{available} available"

    def launch(
        self, filename: str, package: bytes, *, verified: bool, metadata: dict[str, Any]
    ) -> AsyncIterator[LaunchEvent]:
        return self.deployments.launch(
            filename, lambda deployment: self._deploy(deployment, filename, package, metadata)
        )

    async def _deploy(self, deployment: Deployment, filename: str, package: bytes, metadata: dict[str, Any]) -> None:
        decoded = await check_new_package(
            deployment, filename, package, metadata, max_size=self.options.max_package_size, find=self.find
        )
        if decoded is None:
            return
        name = object_name(filename)
        deployment.emit("start", RUNNING, "keeping the package for the runner")
        await anyio.to_thread.run_sync(self._keep_package, filename, package)
        deployment.emit("build", RUNNING, "the runner builds the environment in its pod")
        objects = self.manifests(name, filename, decoded.declaration, str(decoded.identifier), decoded.checksum)
        paths = self._paths(name)
        for kind, body in objects.items():
            await self.api.apply(paths[kind], body)
            deployment.emit("run", RUNNING, f"applied {body['kind']} {self.namespace}/{name}")
        endpoint = await self._until_ready(name, paths["knative" if self.knative else "deployment"])
        deployment.launched(endpoint, name, decoded.checksum[:32])

    def _keep_package(self, filename: str, package: bytes) -> None:
        temporary = self.packages / f".{filename}.tmp"
        temporary.write_bytes(package)
        temporary.replace(self.packages / filename)

    async def _until_ready(self, name: str, path: str) -> str:
        with anyio.fail_after(self.ready_timeout):
            while True:
                found = await self.api.get(path)
                if found is not None:
                    endpoint, _state = self._endpoint_and_state(name, found)
                    if endpoint:
                        return endpoint
                await anyio.sleep(POLL_INTERVAL)

    # --- the objects ----------------------------------------------------------------------------

    def manifests(
        self, name: str, filename: str, declaration: dict[str, Any], identifier: str, checksum: str
    ) -> dict[str, dict[str, Any]]:
        """The objects applied for one package, by kind (``deployment``/``service`` or ``knative``)."""
        metadata = {
            "name": name,
            "namespace": self.namespace,
            "labels": {LABEL_FUNCTION: name, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            "annotations": {ANNOTATION_CHECKSUM: checksum, ANNOTATION_IDENTIFIER: identifier},
        }
        runner = (declaration.get("meta") or {}).get("runner") or {}
        token = package_token(self.options.api_key, filename)
        env = [
            {
                "name": "DIFY_PLUGIN_PACKAGE_URL",
                "value": f"{self.options.public_url.rstrip('/')}/packages/{filename}?token={token}",
            },
            {"name": "DIFY_PLUGIN_DAEMON_URL", "value": self.options.daemon_url},
            {"name": "DIFY_PLUGIN_ENTRYPOINT", "value": str(runner.get("entrypoint") or "main")},
            {"name": "SERVERLESS_PORT", "value": str(PORT)},
        ]
        container: dict[str, Any] = {
            "name": "plugin",
            "image": self.image,
            "env": env,
            "ports": [{"containerPort": PORT, "name": "http1" if self.knative else "http"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}},
            "volumeMounts": [{"name": "work", "mountPath": "/tmp/dify-plugin"}],
        }
        memory = memory_quantity(declaration)
        if memory:
            container["resources"] = {"requests": {"memory": memory}, "limits": {"memory": memory}}
        pod_spec: dict[str, Any] = {
            "containers": [container],
            "volumes": [{"name": "work", "emptyDir": {}}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        }
        if self.knative:
            container["readinessProbe"] = {"httpGet": {"path": "/health"}}  # Knative sets the port
            return {
                "knative": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "metadata": metadata,
                    "spec": {
                        "template": {
                            "metadata": {
                                "labels": {LABEL_FUNCTION: name},
                                "annotations": {"autoscaling.knative.dev/min-scale": "0"},
                            },
                            "spec": {**pod_spec, "timeoutSeconds": math.ceil(self.options.function_timeout)},
                        }
                    },
                }
            }
        return {
            "deployment": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": {
                    "replicas": self.replicas,
                    "selector": {"matchLabels": {LABEL_FUNCTION: name}},
                    "template": {"metadata": {"labels": {LABEL_FUNCTION: name}}, "spec": pod_spec},
                },
            },
            "service": {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "type": "ClusterIP",
                    "selector": {LABEL_FUNCTION: name},
                    "ports": [{"name": "http", "port": PORT, "targetPort": PORT}],
                },
            },
        }

    # --- the package link the runner fetches ----------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [Route("/packages/{filename}", self._package, methods=["GET"])]

    async def _package(self, request: Request) -> Response:
        filename = request.path_params["filename"]
        token = request.query_params.get("token", "")
        path = self.packages / filename
        if (
            "/" in filename
            or filename.startswith(".")
            or not hmac.compare_digest(token.encode(), package_token(self.options.api_key, filename).encode())
        ):
            return JSONResponse({"error": "unknown package or wrong token"}, status_code=404)
        if not path.is_file():
            return JSONResponse({"error": "unknown package or wrong token"}, status_code=404)
        return FileResponse(path, media_type="application/zip")

    def describe(self) -> dict[str, Any]:
        return {
            "provider": "kubernetes",
            "api": self.api.url,
            "namespace": self.namespace,
            "knative": self.knative,
            "image": self.image,
            "deployments_under_way": sorted(self.deployments.under_way),
        }
