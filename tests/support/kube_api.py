"""A stand-in Kubernetes API on loopback: the REST shapes the kubernetes provider uses, nothing more.

- ``PATCH`` (server-side apply, ``application/apply-patch+yaml``) of Deployments, Services and
  Knative Services records each applied object (with its query) and stores it;
- ``GET`` of those objects answers what was stored plus a ``status``;
- ``GET /apis/serving.knative.dev/v1`` answers only when ``knative`` is on ("installed");
- applying a Deployment or a Knative Service runs its pod here: the container's command is the
  runner image's (``runner.py``, run with this Python), its env as applied, on a free loopback
  port; once the SDK's ``/health`` answers, the status says so (``availableReplicas``, or the
  Knative ``Ready`` condition and ``status.url``);
- ``/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/...`` (the API server's service proxy)
  streams calls through to that process, so the function answers at a URL that exists here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from plugin_daemon_kubernetes import runner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.daemon_server import AppServer, free_port

READY_DEADLINE = 600.0


class KubeAPIStandIn(AppServer):
    def __init__(self, *, knative: bool, extra_path: str = "", node_env: dict[str, str] | None = None) -> None:
        self.knative = knative
        self.extra_path = extra_path
        self.node_env = node_env or {}
        self.applied: list[dict[str, Any]] = []  # {"path", "query", "content_type", "body"}
        self.objects: dict[str, dict[str, Any]] = {}  # by path
        self.pods: dict[str, dict[str, Any]] = {}  # by object name: {"process", "port", "ready"}
        self.work = Path(tempfile.mkdtemp(prefix="kube-stand-in-"))
        self.closed = False
        self._lock = threading.Lock()
        resource = "/{group:path}/namespaces/{ns}/{kind}/{name}"
        app = Starlette(
            routes=[
                Route("/apis/serving.knative.dev/v1", self._discovery, methods=["GET"]),
                Route(
                    "/api/v1/namespaces/{ns}/services/{target}/proxy/{rest:path}", self._proxy, methods=["GET", "POST"]
                ),
                Route(resource, self._object, methods=["GET", "PATCH"]),
            ]
        )
        super().__init__(app, "kubernetes API", {})

    def stop(self) -> None:
        self.closed = True
        for pod in self.pods.values():
            pod["process"].kill()
            pod["process"].wait(timeout=10)
        super().stop()

    def proxy_url(self, namespace: str, name: str, port: int = 8080) -> str:
        return f"{self.url}/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy"

    async def _discovery(self, request: Request) -> Response:
        if not self.knative:
            return JSONResponse({"kind": "Status", "code": 404, "reason": "NotFound"}, status_code=404)
        return JSONResponse({"kind": "APIResourceList", "groupVersion": "serving.knative.dev/v1", "resources": []})

    async def _object(self, request: Request) -> Response:
        path = request.url.path
        if request.method == "PATCH":
            body = await request.json()
            with self._lock:
                self.applied.append(
                    {
                        "path": path,
                        "query": dict(request.query_params),
                        "content_type": request.headers.get("content-type", ""),
                        "body": body,
                    }
                )
                self.objects[path] = body
            if body.get("kind") == "Deployment" or body.get("apiVersion") == "serving.knative.dev/v1":
                self._run_pod(body)
            return JSONResponse(body)
        with self._lock:
            stored = self.objects.get(path)
        if stored is None:
            return JSONResponse({"kind": "Status", "code": 404, "reason": "NotFound"}, status_code=404)
        return JSONResponse({**stored, "status": self._status(stored)})

    def _status(self, stored: dict[str, Any]) -> dict[str, Any]:
        name = stored["metadata"]["name"]
        ready = bool(self.pods.get(name, {}).get("ready"))
        if stored.get("apiVersion") == "serving.knative.dev/v1":
            conditions = [{"type": "Ready", "status": "True" if ready else "Unknown"}]
            url = self.proxy_url(stored["metadata"]["namespace"], name) if ready else None
            return {"conditions": conditions, "url": url}
        return {"replicas": 1, "availableReplicas": 1 if ready else 0, "readyReplicas": 1 if ready else 0}

    def _run_pod(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if name in self.pods:
            return
        spec = body["spec"]["template"]["spec"]
        container = spec["containers"][0]
        port = free_port()
        env = {  # this machine's environment stands for the node's (network, certificates, uv's cache)
            **os.environ,
            **self.node_env,
            "PATH": self.extra_path + os.pathsep + os.environ.get("PATH", ""),
            **{item["name"]: item["value"] for item in container.get("env", [])},
            "SERVERLESS_HOST": "127.0.0.1",
            "SERVERLESS_PORT": str(port),
            "DIFY_PLUGIN_WORK_DIR": str(self.work / name),
        }
        pod: dict[str, Any] = {"port": port, "ready": False, "image": container["image"], "env": env, "restarts": 0}
        pod["process"] = self._start(env)
        self.pods[name] = pod
        threading.Thread(target=self._supervise, args=(pod,), daemon=True).start()

    @staticmethod
    def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, runner.__file__], env=env, start_new_session=True)

    def _supervise(self, pod: dict[str, Any]) -> None:
        """Readiness from /health; a container that exits is started again (restartPolicy Always)."""
        while not self.closed:
            deadline = time.monotonic() + READY_DEADLINE
            while time.monotonic() < deadline and pod["process"].poll() is None and not pod["ready"]:
                try:
                    if httpx.get(f"http://127.0.0.1:{pod['port']}/health", timeout=1).status_code == 200:
                        pod["ready"] = True
                except httpx.HTTPError:
                    time.sleep(0.1)
            while pod["process"].poll() is None and not self.closed:
                time.sleep(0.1)
            pod["ready"] = False
            if self.closed:
                return
            pod["restarts"] += 1
            pod["process"] = self._start(pod["env"])

    async def _proxy(self, request: Request) -> Response:
        name = request.path_params["target"].partition(":")[0]
        pod = self.pods.get(name)
        if pod is None or not pod["ready"]:
            return JSONResponse({"kind": "Status", "code": 503, "reason": "ServiceUnavailable"}, status_code=503)
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
        upstream = client.build_request(
            request.method,
            f"http://127.0.0.1:{pod['port']}/{request.path_params['rest']}",
            params=request.query_params,
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
            content=await request.body(),
        )
        response = await client.send(upstream, stream=True)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()
                await client.aclose()

        return StreamingResponse(
            body(), status_code=response.status_code, media_type=response.headers.get("content-type")
        )
